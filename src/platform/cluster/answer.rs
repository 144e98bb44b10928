//! The answer policy of every API client (docs/platform-api.md, "Client policy"): an idle
//! timeout on the answer's head and on each piece of its body, and a cap on its size, as a
//! tower layer over the hyper client (kube reads whole answers into memory and has no such
//! bound).

use std::time::Duration;

/// Our cap or idle timeout, if that is what ended a call.
pub(super) fn answer_limit<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a AnswerLimit> {
    let mut src = Some(e);
    while let Some(s) = src {
        if let Some(limit) = s.downcast_ref::<AnswerLimit>() {
            return Some(limit);
        }
        src = s.source();
    }
    None
}

/// Why [`AnswerPolicyLayer`] ended an answer.
#[derive(Debug)]
pub enum AnswerLimit {
    TooLarge { cap: u64 },
    Idle(Duration),
}

impl std::fmt::Display for AnswerLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnswerLimit::TooLarge { cap } => write!(
                f,
                "the answer is larger than {} MiB, ferry's cap on one Kubernetes API answer \
                 (is --platform-address the platform's address?)",
                cap >> 20
            ),
            AnswerLimit::Idle(t) => write!(f, "no data for {} s (--timeout)", t.as_secs()),
        }
    }
}

impl std::error::Error for AnswerLimit {}

/// The idle timeout and the size cap of [`Cluster::build`], as a tower layer over the hyper
/// client: kube reads whole answers into memory (`request_text`) and has no such bound.
#[derive(Clone)]
pub(super) struct AnswerPolicyLayer {
    pub(super) idle: Duration,
    pub(super) cap: u64,
}

impl<S> tower::Layer<S> for AnswerPolicyLayer {
    type Service = AnswerPolicy<S>;
    fn layer(&self, inner: S) -> AnswerPolicy<S> {
        AnswerPolicy {
            inner,
            idle: self.idle,
            cap: self.cap,
        }
    }
}

#[derive(Clone)]
pub(super) struct AnswerPolicy<S> {
    inner: S,
    idle: Duration,
    cap: u64,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for AnswerPolicy<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ResBody: http_body::Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = http::Response<CappedBody<ResBody>>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::result::Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let (idle, cap) = (self.idle, self.cap);
        let answer = self.inner.call(req);
        Box::pin(async move {
            let res = tokio::time::timeout(idle, answer)
                .await
                .map_err(|_| Box::new(AnswerLimit::Idle(idle)) as BoxError)?
                .map_err(Into::into)?;
            // a declared length over the cap is refused before a byte of it is read
            let declared = res
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > cap) {
                return Err(Box::new(AnswerLimit::TooLarge { cap }) as BoxError);
            }
            Ok(res.map(|body| CappedBody {
                inner: body,
                seen: 0,
                cap,
                idle,
                timer: Box::pin(tokio::time::sleep(idle)),
            }))
        })
    }
}

/// An answer's body that fails once more than `cap` bytes came, or when none came for `idle`.
pub struct CappedBody<B> {
    inner: B,
    seen: u64,
    cap: u64,
    idle: Duration,
    timer: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl<B> http_body::Body for CappedBody<B>
where
    B: http_body::Body<Data = bytes::Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<http_body::Frame<bytes::Bytes>, BoxError>>>
    {
        use std::future::Future as _;
        use std::task::Poll;
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.cap {
                        let cap = this.cap;
                        return Poll::Ready(Some(Err(Box::new(AnswerLimit::TooLarge { cap }))));
                    }
                }
                let next = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(next);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(AnswerLimit::Idle(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
