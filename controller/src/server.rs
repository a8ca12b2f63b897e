//! The HTTPS listener: tokio-rustls in front of hyper-util, serving the warp routes.
//!
//! warp 0.4 has no TLS of its own, so each accepted TCP connection is handshaken here,
//! the verified client certificate (if any) is put into every request's extensions as a
//! [`Peer`], and the connection is served with upgrades enabled for agent WebSockets.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::Filter;
use warp::reply::Response;

use crate::api::Peer;

/// Accepts connections forever.
pub async fn serve<F>(listener: TcpListener, tls: Arc<rustls::ServerConfig>, routes: F)
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let acceptor = TlsAcceptor::from(tls);
    loop {
        let (tcp, remote) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly, keep serving.
                tracing::warn!(error = %e, "Accept failed.");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let routes = routes.clone();
        tokio::spawn(async move { serve_connection(acceptor, tcp, remote, routes).await });
    }
}

async fn serve_connection<F>(
    acceptor: TlsAcceptor,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    routes: F,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let tls = match tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            // Agents with a certificate from another CA end here.
            tracing::warn!(%remote, error = %e, "TLS handshake refused.");
            return;
        }
        Err(_) => {
            tracing::warn!(%remote, "TLS handshake timed out.");
            return;
        }
    };
    let peer = Peer {
        client_cert_fingerprint: tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| crate::tls::fingerprint(cert)),
    };
    let warp_service = warp::service(routes);
    let service = tower_service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(peer.clone());
        let mut svc = warp_service.clone();
        async move { tower_service::Service::call(&mut svc, request).await }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service))
        .await
    {
        tracing::debug!(%remote, error = %e, "Connection ended with an error.");
    }
}

/// A tiny `tower_service::Service` from a closure (hyper-util adapts tower services).
fn tower_service_fn<F, Fut>(f: F) -> ServiceFn<F>
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, Infallible>>,
{
    ServiceFn(f)
}

#[derive(Clone)]
struct ServiceFn<F>(F);

impl<F, Fut> tower_service::Service<http::Request<hyper::body::Incoming>> for ServiceFn<F>
where
    F: Fn(http::Request<hyper::body::Incoming>) -> Fut,
    Fut: std::future::Future<Output = Result<Response, Infallible>>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Fut;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<hyper::body::Incoming>) -> Fut {
        (self.0)(request)
    }
}
