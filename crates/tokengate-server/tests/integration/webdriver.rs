//! A W3C WebDriver client, just what `browser.rs` needs: JSON over HTTP to
//! a local chromedriver, on the reqwest client the tests already use.
//!
//! Written here rather than taken from fantoccini: its `webdriver` crate
//! brings a second `http`, `cookie`, `thiserror` and ICU generation (13
//! duplicate crates that `deny.toml` refuses) under MPL-2.0, for a protocol
//! of a dozen JSON commands.

use base64::Engine as _;
use serde_json::{Value, json};

/// The key of an element reference in WebDriver's JSON.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A WebDriver error: its code (`no such element`, ...) and message.
#[derive(Debug)]
pub struct WebDriverError(pub String);

/// One browser session.
pub struct Session {
    http: reqwest::Client,
    /// `<driver>/session/<id>`.
    base: String,
    /// `/session/<id>`.
    path: String,
}

/// An element of the page.
pub struct Element<'a> {
    session: &'a Session,
    id: String,
}

impl Session {
    /// Starts a session with these capabilities (`alwaysMatch`).
    pub async fn start(driver: &str, capabilities: Value) -> Session {
        let http = reqwest::Client::new();
        let response: Value = http
            .post(format!("{driver}/session"))
            .json(&json!({"capabilities": {"alwaysMatch": capabilities}}))
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("a JSON answer");
        let id = response["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {response}"))
            .to_owned();
        Session {
            http,
            base: format!("{driver}/session/{id}"),
            path: format!("/session/{id}"),
        }
    }

    /// `/session/<id>`, the session's path at the driver.
    pub fn path(&self) -> &str {
        &self.path
    }

    async fn command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, WebDriverError> {
        let request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        // POSTs carry a JSON object, even an empty one.
        let request = match (body, method == reqwest::Method::POST) {
            (Some(body), _) => request.json(&body),
            (None, true) => request.json(&json!({})),
            (None, false) => request,
        };
        let response = request
            .send()
            .await
            .map_err(|e| WebDriverError(e.to_string()))?;
        let ok = response.status().is_success();
        let answer: Value = response
            .json()
            .await
            .map_err(|e| WebDriverError(e.to_string()))?;
        let value = answer.get("value").cloned().unwrap_or(Value::Null);
        if ok {
            Ok(value)
        } else {
            Err(WebDriverError(format!(
                "{}: {}",
                value["error"].as_str().unwrap_or("error"),
                value["message"].as_str().unwrap_or("")
            )))
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, WebDriverError> {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Result<Value, WebDriverError> {
        self.command(reqwest::Method::GET, path, None).await
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({"url": url})).await.unwrap();
    }

    /// Reloads the page.
    pub async fn refresh(&self) {
        self.post("/refresh", json!({})).await.unwrap();
    }

    /// The page's URL.
    pub async fn current_url(&self) -> String {
        self.get("/url")
            .await
            .unwrap()
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Runs a script's body in the page; what it returns.
    pub async fn execute(&self, script: &str) -> Result<Value, WebDriverError> {
        self.post("/execute/sync", json!({"script": script, "args": []}))
            .await
    }

    /// The first element a CSS selector finds.
    pub async fn css(&self, selector: &str) -> Element<'_> {
        self.find("css selector", selector).await
    }

    /// The first element an XPath finds.
    pub async fn xpath(&self, path: &str) -> Element<'_> {
        self.find("xpath", path).await
    }

    async fn find(&self, using: &str, value: &str) -> Element<'_> {
        let found = self
            .post("/element", json!({"using": using, "value": value}))
            .await
            .unwrap_or_else(|e| panic!("{using} {value}: {}", e.0));
        self.element(&found)
    }

    fn element(&self, reference: &Value) -> Element<'_> {
        Element {
            session: self,
            id: reference[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("not an element: {reference}"))
                .to_owned(),
        }
    }

    /// The element that has the focus.
    pub async fn active_element(&self) -> Element<'_> {
        let found = self.get("/element/active").await.unwrap();
        self.element(&found)
    }

    /// Every cookie of the page's site, HttpOnly ones included (WebDriver
    /// sees what scripts cannot).
    pub async fn cookies(&self) -> Vec<Value> {
        match self.get("/cookie").await.unwrap() {
            Value::Array(cookies) => cookies,
            other => panic!("cookies: {other}"),
        }
    }

    /// Deletes every cookie of the page's site.
    pub async fn delete_all_cookies(&self) {
        self.command(reqwest::Method::DELETE, "/cookie", None)
            .await
            .unwrap();
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&self) -> Vec<u8> {
        let encoded = self.get("/screenshot").await.unwrap();
        base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("base64 PNG")
    }

    /// Sends a Chrome DevTools Protocol command to the page (chromedriver's
    /// `goog/cdp/execute` extension), e.g. `Emulation.setTimezoneOverride`.
    pub async fn cdp(&self, command: &str, params: Value) -> Result<Value, WebDriverError> {
        self.post(
            "/goog/cdp/execute",
            json!({"cmd": command, "params": params}),
        )
        .await
    }

    /// Ends the session (the browser quits).
    pub async fn close(self) {
        let _ = self
            .http
            .delete(&self.base)
            .send()
            .await
            .expect("chromedriver answers");
    }
}

impl Element<'_> {
    /// Clicks it.
    pub async fn click(&self) {
        self.session
            .post(&format!("/element/{}/click", self.id), json!({}))
            .await
            .unwrap();
    }

    /// Types `text` into it (`\u{e004}` is Tab, `\u{e007}` Enter).
    pub async fn send_keys(&self, text: &str) {
        self.session
            .post(
                &format!("/element/{}/value", self.id),
                json!({"text": text}),
            )
            .await
            .unwrap();
    }

    /// Empties a field.
    pub async fn clear(&self) {
        self.session
            .post(&format!("/element/{}/clear", self.id), json!({}))
            .await
            .unwrap();
    }
}
