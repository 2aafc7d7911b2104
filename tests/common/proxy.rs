//! A cuttable TCP path to a real server.

/// A TCP forwarder the test can cut, standing in for the network path to
/// the real database: dropping it makes the database unreachable.
pub struct Proxy {
    pub addr: String,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, task }
    }
}

impl Drop for Proxy {
    // Aborting the accept loop drops the JoinSet, which aborts every
    // forwarding task and closes their sockets.
    fn drop(&mut self) {
        self.task.abort();
    }
}
