//! Runs the real binary (which also makes `cargo test --workspace` build it for the
//! gateway's integration tests) and checks that it answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

#[test]
fn binary_serves_health_and_properties() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_upstream-example"))
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start upstream-example");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read address");
    let addr = line
        .trim()
        .strip_prefix("listening on http://")
        .expect("address line")
        .to_owned();
    for (path, expect) in [("/health", "\"ok\""), ("/properties/1", "\"id\":1")] {
        let mut stream = TcpStream::connect(&addr).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        assert!(response.contains(expect), "{path}: {response}");
    }
    child.kill().expect("kill");
    let _ = child.wait();
}
