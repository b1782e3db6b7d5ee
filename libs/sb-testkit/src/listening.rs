//! Serving a fake outside API (HubSpot, an OpenAI-compatible model) on `127.0.0.1`, so that a
//! test can stop it — connections are refused, as with a service that is down — and restart it
//! on the same port with the same state.

use std::{
    io,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use axum::Router;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};

struct Server {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// An axum app listening on one port until stopped (also when dropped).
pub struct Listening {
    addr: SocketAddr,
    app: Router,
    server: Mutex<Option<Server>>,
}

fn serve(listener: TcpListener, app: Router) -> Server {
    let (stop, mut stop_rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.wait_for(|s| *s).await;
            })
            .await;
    });
    Server { stop, task }
}

impl Listening {
    /// Binds `127.0.0.1:0` and serves `app`.
    pub async fn start(app: Router) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let server = serve(listener, app.clone());
        Ok(Self { addr, app, server: Mutex::new(Some(server)) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether it is listening (false between [`Listening::stop`] and [`Listening::restart`]).
    pub fn is_running(&self) -> bool {
        self.server.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Stops listening and closes every connection (in-flight requests get 5 s to finish).
    pub async fn stop(&self) {
        let server = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(server) = server else { return };
        let _ = server.stop.send(true);
        let mut task = server.task;
        if tokio::time::timeout(Duration::from_secs(5), &mut task).await.is_err() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&self) -> io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        // The port was ours a moment ago; give the kernel a moment if it still holds it.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        };
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(serve(listener, self.app.clone()));
        Ok(())
    }
}

impl Drop for Listening {
    fn drop(&mut self) {
        if let Some(server) = self.server.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = server.stop.send(true);
            server.task.abort();
        }
    }
}
