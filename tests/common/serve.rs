//! The test servers' accept loop (its own file so that examples/discard-registry.rs can take
//! it with the discard registry alone).

/// Serves every connection of `listener` with `on_connection`, on a runtime of its own
/// thread (`workers` threads): the test servers' accept loop.
pub fn serve_in_background<F, Fut>(
    listener: std::net::TcpListener,
    workers: usize,
    on_connection: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(on_connection(stream));
            }
        });
    });
}
