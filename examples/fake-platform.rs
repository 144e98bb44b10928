//! The tests' fake ACP platform (tests/common/platform.rs) as a program of its own, so that
//! scripts/demo.sh can show the operators' job, `ferry push --platform-address`, without a
//! platform: the documented five-call password login and each cluster's Kubernetes API
//! under `/kubernetes/<cluster>/` over HTTPS, with a CA made here and objects kept in memory.
//! Not a platform for anything else: no controllers act on what is written.
//!
//!     cargo run --release --example fake-platform -- --listen 127.0.0.1:8443 \
//!         --registry 127.0.0.1:5000 [--registry-user U --registry-password P] --dir DIR
//!
//! Writes its CA to DIR/ca.pem (once it answers), prints its URL and demo login, holds
//! ProductBase `base` (spec.registry.address = the registry) and, with credentials, Secret
//! cpaas-system/registry-admin; serves until killed.

// the simulated cluster-version operator the fake carries (off: nothing installs it here)
#[path = "../tests/common/cvo.rs"]
mod cvo;
#[path = "../tests/common/platform.rs"]
mod platform;
#[path = "../tests/common/serve.rs"]
mod serve;
use serve::serve_in_background;

use std::path::PathBuf;

const USAGE: &str = "usage: fake-platform --listen HOST:PORT --registry HOST:PORT \
                     [--registry-user U --registry-password P] --dir DIR";

fn main() {
    let (mut listen, mut registry, mut user, mut password, mut dir) =
        (None, None, None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .unwrap_or_else(|| panic!("{flag} needs a value; {USAGE}"));
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--registry" => registry = Some(value),
            "--registry-user" => user = Some(value),
            "--registry-password" => password = Some(value),
            "--dir" => dir = Some(PathBuf::from(value)),
            _ => panic!("unknown flag {flag}; {USAGE}"),
        }
    }
    let (Some(listen), Some(registry), Some(dir)) = (listen, registry, dir) else {
        panic!("{USAGE}");
    };
    std::fs::create_dir_all(&dir).expect("create --dir");
    // the fake's own temporary directory goes under DIR: a kill leaves nothing elsewhere
    std::env::set_var("TMPDIR", &dir);
    let listener = std::net::TcpListener::bind(&listen).expect("bind --listen");
    let p = platform::FakePlatform::start_on(platform::PlatformOpts::default(), listener);
    p.set_product_base(&registry, None, false);
    let creds = match (&user, &password) {
        (Some(u), Some(pw)) => {
            p.set_registry_admin(u, pw);
            format!("; Secret cpaas-system/registry-admin holds its credentials (user {u})")
        }
        (None, None) => String::new(),
        _ => panic!("--registry-user and --registry-password go together; {USAGE}"),
    };
    // written last and renamed into place: once DIR/ca.pem is there, the platform answers
    let ca = dir.join("ca.pem");
    std::fs::copy(p.ca(), dir.join("ca.pem.part")).expect("write the CA");
    std::fs::rename(dir.join("ca.pem.part"), &ca).expect("write the CA");
    println!("fake platform at {} (CA {})", p.url(), ca.display());
    println!(
        "  login: {} / {} (demo values), or the token {}",
        platform::ADMIN,
        platform::ADMIN_PASSWORD,
        platform::TOKEN
    );
    println!("  cluster global: ProductBase base points at registry {registry}{creds}");
    loop {
        std::thread::park();
    }
}
