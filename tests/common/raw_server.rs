//! A raw HTTP/1.1 server on 127.0.0.1 for tests that need bytes no real framework would send:
//! each connection is answered on a thread of its own by a closure, then closed.
#![allow(dead_code)] // each test file uses its own part

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// A server answering every connection on a thread of its own with `respond(request head,
/// socket)`, then closing it. Returns its root URL and the requests it read, each as its
/// text (the request line, the headers, the body).
pub fn serve(
    respond: impl Fn(&str, &mut TcpStream) + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (respond, log) = (Arc::new(respond), seen.clone());
    std::thread::spawn(move || {
        for socket in listener.incoming() {
            let Ok(mut socket) = socket else { continue };
            let (respond, log) = (respond.clone(), log.clone());
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).map_or(true, |n| n == 0) {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_string();
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                let mut body = vec![0u8; length];
                if socket.read_exact(&mut body).is_err() {
                    return;
                }
                log.lock()
                    .unwrap()
                    .push(format!("{head}{}", String::from_utf8_lossy(&body)));
                respond(&head, &mut socket);
            });
        }
    });
    (url, seen)
}

/// A complete answer with a body, closing the connection.
pub fn answer(socket: &mut TcpStream, status: &str, content_type: &str, body: &str) {
    let _ = write!(
        socket,
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A streamed completion of `tokens` one-token chunks, usage (`completion_tokens`) and `[DONE]`.
pub fn stream(socket: &mut TcpStream, tokens: usize, completion_tokens: &str) {
    answer(
        socket,
        "200 OK",
        "text/event-stream",
        &completion_events(tokens, completion_tokens),
    );
}

/// The events of a completion: `tokens` one-token chunks, usage and `[DONE]`.
pub fn completion_events(tokens: usize, completion_tokens: &str) -> String {
    let mut body = String::new();
    for k in 0..tokens {
        let finish = if k + 1 == tokens {
            "\"length\""
        } else {
            "null"
        };
        body.push_str(&format!(
            "data: {{\"choices\":[{{\"index\":0,\"text\":\"tok \",\"finish_reason\":{finish}}}]}}\n\n"
        ));
    }
    body.push_str(&format!(
        "data: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":4,\"completion_tokens\":{completion_tokens}}}}}\n\ndata: [DONE]\n\n"
    ));
    body
}
