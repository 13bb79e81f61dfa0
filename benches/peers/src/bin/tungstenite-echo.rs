//! Echo server on tokio-tungstenite (single thread): every text/binary message comes back unchanged.

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let config = WebSocketConfig::default().max_message_size(Some(16 << 20));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(_) | Message::Binary(_) => {
                // Feed without flushing while more input is already buffered, then flush once.
                if ws.feed(message).await.is_err() {
                    return;
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            Message::Close(_) => return,
            _ => {}
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = ringws_bench_peers::listen_address();
    let listener = TcpListener::bind(addr).await.expect("bind");
    ringws_bench_peers::announce(listener.local_addr().expect("local addr"));
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    }
}
