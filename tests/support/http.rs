//! A real local HTTP/1.1 server for webhook tests (std::net, one thread per connection). Each
//! request takes the next scripted [`Reply`] (then the default one) and is recorded with its
//! arrival time, headers, and optionally what `observe` returned at that moment (e.g. the
//! volume's content, to tell which version a request belongs to).

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How the server answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Answer at once with this status.
    Status(u16),
    /// Wait this long, then answer with the status.
    Slow(Duration, u16),
    /// Read the request and never answer (the connection stays open).
    Hang,
    /// Read the request and close the connection without a response.
    Close,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub at: Instant,
    /// Arrival in unix nanoseconds (for latency against a writer's clock).
    pub unix_ns: u128,
    /// What `observe` returned when the request arrived.
    pub observed: String,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

type Observer = Arc<dyn Fn() -> String + Send + Sync>;

/// The server; it runs until the test process ends.
pub struct HttpServer {
    pub port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl HttpServer {
    /// Starts a server on 127.0.0.1:0 answering `script` in order, then `default`.
    pub fn start(script: &[Reply], default: Reply) -> HttpServer {
        Self::start_observing(script, default, Arc::new(String::new))
    }

    /// Like [`start`](Self::start), recording `observe()` for every request on arrival.
    pub fn start_observing(script: &[Reply], default: Reply, observe: Observer) -> HttpServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.iter().copied().collect::<VecDeque<_>>()));
        let server = HttpServer {
            port,
            seen: seen.clone(),
        };
        thread::spawn(move || {
            for stream in listener.incoming().map_while(Result::ok) {
                let (seen, script, observe) = (seen.clone(), script.clone(), observe.clone());
                thread::spawn(move || serve(stream, &seen, &script, default, &observe));
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().expect("seen lock").len()
    }

    pub fn wait_for_requests(&self, n: usize) {
        super::eventually(&format!("{n} requests at the server"), || self.count() >= n);
    }
}

fn serve(
    stream: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    script: &Mutex<VecDeque<Reply>>,
    default: Reply,
    observe: &Observer,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut stream = stream;
    // Keep-alive: serve requests on this connection until the client closes it.
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let at = Instant::now();
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("clock")
            .as_nanos();
        let mut headers = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let name = name.trim().to_ascii_lowercase();
                if name == "content-length" {
                    length = value.trim().parse().unwrap_or(0);
                }
                headers.push((name, value.trim().to_owned()));
            }
        }
        let mut body = vec![0u8; length];
        let _ = std::io::Read::read_exact(&mut reader, &mut body);
        let mut parts = request_line.split_whitespace();
        let reply = script
            .lock()
            .expect("script lock")
            .pop_front()
            .unwrap_or(default);
        seen.lock().expect("seen lock").push(Seen {
            method: parts.next().unwrap_or("").to_owned(),
            path: parts.next().unwrap_or("").to_owned(),
            headers,
            at,
            unix_ns,
            observed: observe(),
        });
        let status = match reply {
            Reply::Status(status) => status,
            Reply::Slow(delay, status) => {
                thread::sleep(delay);
                status
            }
            Reply::Hang => {
                thread::sleep(Duration::from_secs(60));
                return;
            }
            Reply::Close => return,
        };
        let response =
            format!("HTTP/1.1 {status} Scripted\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nok\n");
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
