//! A `drover serve` process on a free loopback port, and a small HTTP client for it.

use std::time::Duration;

use serde_json::Value;

use super::{Env, Worker};

/// A running server and its base URL.
pub struct Server {
    pub process: Worker,
    pub url: String,
    pub token: Option<String>,
}

/// `serve` on a free loopback port, then ARGS.
pub fn serve_args<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    all
}

impl Env {
    /// Starts `drover serve --listen 127.0.0.1:0 ARGS` and reads the port it got from its log.
    pub fn serve(&self, name: &str, args: &[&str]) -> Server {
        Server::start(self, name, self.cmd(&serve_args(args)), None)
    }
}

impl Server {
    /// Starts `cmd` (a `drover serve` command), with `DROVER_TOKEN` set when `token` is given,
    /// and reads the address it listens on from its log.
    pub fn start(
        env: &Env,
        name: &str,
        mut cmd: std::process::Command,
        token: Option<&str>,
    ) -> Server {
        if let Some(token) = token {
            cmd.env("DROVER_TOKEN", token);
        }
        let process = env.spawn_cmd(name, cmd);
        let log = process.log();
        let url = log
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split('/').nth(2))
            .map(|addr| format!("http://{addr}"))
            .unwrap_or_else(|| panic!("no listen address in the log:\n{log}"));
        Server {
            process,
            url,
            token: token.map(str::to_owned),
        }
    }

    /// The same server, with another token (or none) on requests.
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            url: self.url.clone(),
            token: token.map(str::to_owned),
        }
    }
}

/// Requests to a server with a given token.
pub struct Client {
    pub url: String,
    pub token: Option<String>,
}

impl Client {
    /// GET.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let mut request = ureq::get(&format!("{}{path}", self.url));
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        Server::answer(request.call())
    }
}

impl Server {
    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let mut request =
            ureq::request(method, &format!("{}{path}", self.url)).timeout(Duration::from_secs(40));
        if let Some(token) = &self.token {
            request = request.set("Authorization", &format!("Bearer {token}"));
        }
        request
    }

    pub fn answer(result: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
        let response = match result {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("request failed: {err}"),
        };
        let status = response.status();
        let text = response.into_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    /// GET; returns the status and the JSON body (or the text as a JSON string).
    pub fn get(&self, path: &str) -> (u16, Value) {
        Self::answer(self.request("GET", path).call())
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        Self::answer(self.request("POST", path).send_json(body.clone()))
    }

    /// POST with raw bytes and a content type.
    pub fn post_raw(&self, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
        Self::answer(
            self.request("POST", path)
                .set("Content-Type", content_type)
                .send_bytes(body),
        )
    }

    /// POST with a JSON body given as text; returns the status and the body as text (exact,
    /// where a parse into `Value` would round big numbers).
    pub fn post_text(&self, path: &str, body: &str) -> (u16, String) {
        let response = match self
            .request("POST", path)
            .set("Content-Type", "application/json")
            .send_string(body)
        {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("POST {path}: {err}"),
        };
        (
            response.status(),
            response.into_string().unwrap_or_default(),
        )
    }

    /// GET; returns the status and the body as text (exact, as [`Server::post_text`]).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        let response = match self.request("GET", path).call() {
            Ok(response) | Err(ureq::Error::Status(_, response)) => response,
            Err(err) => panic!("GET {path}: {err}"),
        };
        (
            response.status(),
            response.into_string().unwrap_or_default(),
        )
    }

    /// POST that must succeed; returns the body.
    pub fn ok(&self, path: &str, body: &Value) -> Value {
        let (status, answer) = self.post(path, body);
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {answer}"
        );
        answer
    }
}
