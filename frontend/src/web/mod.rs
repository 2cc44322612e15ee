//! The web face of a frontend: the storefront (`/`, `/book/{id}`,
//! `/history`, `/staff`) and the cluster lab (`/lab`).
//!
//! What it promises:
//! - Pages are HTML rendered here, with a small script and a style sheet
//!   compiled into the binary (`/assets/...`): nothing is loaded from
//!   anywhere else, which the `Content-Security-Policy` of every page
//!   enforces in the browser.
//! - The scripts use the same public JSON API as any client (`/books`,
//!   `/books/{id}/buy`, `/orders`, ...): the pages bypass neither the cache
//!   rules nor consistency, and they show where each answer came from with
//!   the `X-Bazar-*` headers the API returns.
//! - A buy button mints one `Idempotency-Key` per purchase and re-sends it on
//!   every click and retry of that purchase, so a double click buys once.
//! - The lab ([`lab`]) pushes the cluster's state with server-sent events,
//!   and relays fault buttons to a lab supervisor when one is configured;
//!   without one it is read-only.
//!
//! None of this sits on the API's request path: these routes are separate,
//! and the lab's sampler runs only while a lab page is open.

pub mod lab;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bazar_api::{ErrorCode, Problem};

use crate::Frontend;

const CSS: &str = include_str!("assets/app.css");
const STORE_JS: &str = include_str!("assets/store.js");
const LAB_JS: &str = include_str!("assets/lab.js");

/// Every page may load only what this frontend serves.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The web routes, merged into the API's router.
pub fn routes() -> Router<Arc<Frontend>> {
    Router::new()
        .route("/", get(storefront))
        .route("/book/{id}", get(book))
        .route("/history", get(history))
        .route("/staff", get(staff))
        .route("/lab", get(lab_page))
        .route("/lab/events", get(lab::events))
        .route("/lab/control/nodes/{id}/{action}", post(lab::node_action))
        .route("/lab/control/groups/{group}/transfer-leader", post(lab::transfer_leader))
        .route("/lab/control/heal", post(lab::heal))
        .route("/lab/control/try", post(lab::try_it))
        .route("/assets/{name}", get(asset))
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Which entry of the navigation is the current page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Store,
    History,
    Staff,
    Lab,
}

/// The page around `main`: head, navigation, and the script to run.
fn page(title: &str, nav: Nav, kind: &str, main: &str, script: &str) -> Response {
    let link = |href: &str, label: &str, this: Nav| {
        let current = if nav == this { " aria-current=\"page\"" } else { "" };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title} · Bazar</title>\n<link rel=\"stylesheet\" href=\"/assets/app.css\">\n\
         <script src=\"/assets/{script}\" defer></script>\n</head>\n<body>\n\
         <a class=\"skip\" href=\"#main\">Skip to content</a>\n\
         <header class=\"top\"><a class=\"brand\" href=\"/\">Bazar</a>\n\
         <nav aria-label=\"Site\">{} {} {} {}</nav></header>\n\
         <main id=\"main\" data-page=\"{kind}\">\n{main}\n</main>\n\
         <noscript><p class=\"notice\">These pages need JavaScript to talk to the store's API.</p></noscript>\n\
         <footer><p>Bazar: a bookstore replicated with Raft. Every answer says where it came from.</p></footer>\n\
         </body>\n</html>\n",
        link("/", "Store", Nav::Store),
        link("/history", "Orders", Nav::History),
        link("/staff", "Staff", Nav::Staff),
        link("/lab", "Lab", Nav::Lab),
        title = escape(title),
    );
    html_response(html)
}

fn html_response(html: String) -> Response {
    let mut response = (StatusCode::OK, html).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A line that says where an answer came from, filled in by the script.
const SOURCE: &str = "<p class=\"source\" data-role=\"source\" aria-live=\"polite\"></p>";

async fn storefront() -> Response {
    let main = format!(
        "<h1>Find a book</h1>\n\
         <form class=\"search\" role=\"search\" action=\"/\" method=\"get\">\n\
         <label for=\"topic\">Topic</label>\n\
         <input id=\"topic\" name=\"topic\" type=\"search\" maxlength=\"100\" placeholder=\"distributed systems\" autocomplete=\"off\">\n\
         <button type=\"submit\">Search</button>\n</form>\n\
         <section aria-labelledby=\"topics-h\"><h2 id=\"topics-h\">Browse topics</h2>\n\
         <ul class=\"topics\" data-role=\"topics\"><li>Loading…</li></ul></section>\n\
         <section aria-labelledby=\"results-h\"><h2 id=\"results-h\" data-role=\"results-title\">All books</h2>\n\
         <div class=\"message\" data-role=\"message\" role=\"alert\"></div>\n\
         <ul class=\"books\" data-role=\"results\"></ul>\n\
         <p class=\"pager\"><a data-role=\"next\" hidden>Next page</a></p>\n{SOURCE}</section>"
    );
    page("Store", Nav::Store, "search", &main, "store.js")
}

async fn book(Path(id): Path<String>) -> Response {
    let id = match id.parse::<u64>() {
        Ok(id) if id > 0 => id,
        _ => {
            return Problem::new(ErrorCode::NotFound, format!("no page for book {id:?}: ids are positive integers"))
                .into_response();
        }
    };
    let main = format!(
        "<article class=\"book\" data-book=\"{id}\">\n\
         <h1 data-role=\"title\">Book {id}</h1>\n\
         <div class=\"message\" data-role=\"message\" role=\"alert\"></div>\n\
         <dl class=\"facts\">\n<dt>Price</dt><dd data-role=\"price\">…</dd>\n\
         <dt>In stock</dt><dd data-role=\"stock\" aria-live=\"polite\">…</dd>\n\
         <dt>Topic</dt><dd data-role=\"topic\">…</dd>\n<dt>ISBN</dt><dd data-role=\"isbn\">…</dd>\n</dl>\n{SOURCE}\n\
         <form class=\"buy\" data-role=\"buy-form\">\n<h2>Buy</h2>\n\
         <label for=\"quantity\">Quantity</label>\n\
         <input id=\"quantity\" name=\"quantity\" type=\"number\" min=\"1\" max=\"1000000\" value=\"1\" required>\n\
         <label for=\"buyer\">Your name <span class=\"hint\">(optional, for your order history)</span></label>\n\
         <input id=\"buyer\" name=\"buyer\" maxlength=\"64\" pattern=\"[A-Za-z0-9][A-Za-z0-9._\\-]{{0,63}}\" autocomplete=\"nickname\">\n\
         <button type=\"submit\" data-role=\"buy\">Buy</button>\n\
         <button type=\"button\" data-role=\"again\" hidden>Start a new purchase</button>\n\
         <p class=\"key\">Purchase key: <code data-role=\"key\"></code></p>\n\
         </form>\n\
         <section class=\"outcome\" data-role=\"outcome\" aria-live=\"polite\" tabindex=\"-1\"></section>\n\
         </article>"
    );
    page(&format!("Book {id}"), Nav::Store, "book", &main, "store.js")
}

async fn history() -> Response {
    let main = format!(
        "<h1>Order history</h1>\n\
         <form class=\"search\" action=\"/history\" method=\"get\">\n\
         <label for=\"buyer\">Buyer</label>\n\
         <input id=\"buyer\" name=\"buyer\" maxlength=\"64\" pattern=\"[A-Za-z0-9][A-Za-z0-9._\\-]{{0,63}}\" required>\n\
         <button type=\"submit\">Show orders</button>\n</form>\n\
         <div class=\"message\" data-role=\"message\" role=\"alert\"></div>\n\
         <table class=\"orders\"><caption data-role=\"caption\">Orders</caption>\n\
         <thead><tr><th scope=\"col\">Order</th><th scope=\"col\">Book</th><th scope=\"col\">Qty</th>\
         <th scope=\"col\">Total</th><th scope=\"col\">Status</th><th scope=\"col\">Placed</th></tr></thead>\n\
         <tbody data-role=\"orders\"></tbody></table>\n\
         <p class=\"pager\"><a data-role=\"next\" hidden>Next page</a></p>\n{SOURCE}"
    );
    page("Orders", Nav::History, "history", &main, "store.js")
}

async fn staff() -> Response {
    let main = "<h1>Staff</h1>\n\
        <p>Changes to the catalog need the store's admin token. It is kept in this tab only.</p>\n\
        <form data-role=\"token-form\" class=\"inline\">\n\
        <label for=\"token\">Admin token</label>\n\
        <input id=\"token\" type=\"password\" autocomplete=\"off\" required>\n\
        <button type=\"submit\">Use token</button></form>\n\
        <div class=\"message\" data-role=\"message\" role=\"alert\"></div>\n\
        <div class=\"grid\">\n\
        <form data-role=\"add-form\" class=\"card\"><h2>Add a book</h2>\n\
        <label for=\"isbn\">ISBN-13</label><input id=\"isbn\" name=\"isbn\" required inputmode=\"numeric\" maxlength=\"17\">\n\
        <label for=\"title\">Title</label><input id=\"title\" name=\"title\" required maxlength=\"300\">\n\
        <label for=\"btopic\">Topic</label><input id=\"btopic\" name=\"topic\" required maxlength=\"100\">\n\
        <label for=\"price\">Price (cents)</label><input id=\"price\" name=\"price_cents\" type=\"number\" min=\"0\" required>\n\
        <label for=\"stock\">Initial stock</label><input id=\"stock\" name=\"stock\" type=\"number\" min=\"0\" value=\"0\">\n\
        <button type=\"submit\">Add book</button></form>\n\
        <form data-role=\"restock-form\" class=\"card\"><h2>Restock</h2>\n\
        <label for=\"rid\">Book id</label><input id=\"rid\" name=\"id\" type=\"number\" min=\"1\" required>\n\
        <label for=\"rqty\">Copies to add</label><input id=\"rqty\" name=\"quantity\" type=\"number\" min=\"1\" required>\n\
        <button type=\"submit\">Restock</button></form>\n\
        <form data-role=\"price-form\" class=\"card\"><h2>Change a price</h2>\n\
        <label for=\"pid\">Book id</label><input id=\"pid\" name=\"id\" type=\"number\" min=\"1\" required>\n\
        <label for=\"pcents\">New price (cents)</label><input id=\"pcents\" name=\"price_cents\" type=\"number\" min=\"0\" required>\n\
        <button type=\"submit\">Set price</button></form>\n\
        </div>\n<section class=\"outcome\" data-role=\"outcome\" aria-live=\"polite\"></section>";
    page("Staff", Nav::Staff, "staff", main, "store.js")
}

async fn lab_page(State(front): State<Arc<Frontend>>) -> Response {
    let controls = front.config.lab.is_some();
    let mode = if controls {
        "<form data-role=\"lab-token-form\" class=\"inline\">\n\
         <label for=\"lab-token\">Lab token</label>\n\
         <input id=\"lab-token\" type=\"password\" autocomplete=\"off\" required>\n\
         <button type=\"submit\">Unlock fault buttons</button>\n\
         <span class=\"hint\">printed by <code>bazar-lab</code>; the link it prints fills it in</span></form>"
    } else {
        "<p class=\"notice\">Read-only: this frontend runs without a lab supervisor, so there are no fault buttons. \
         Start a local lab cluster with <code>bazar-lab</code> to get them.</p>"
    };
    let main = format!(
        "<h1>Raft lab</h1>\n{mode}\n\
         <p class=\"live\" data-role=\"live\" aria-live=\"polite\">Connecting…</p>\n\
         <div class=\"message\" data-role=\"message\" role=\"alert\"></div>\n\
         <section aria-labelledby=\"rates-h\" class=\"rates\"><h2 id=\"rates-h\">Load, last minute</h2>\n\
         <dl class=\"facts\"><dt>Buys/s</dt><dd data-role=\"buys\">–</dd><dt>Reads/s</dt><dd data-role=\"reads\">–</dd>\
         <dt>Cache hit ratio</dt><dd data-role=\"hits\">–</dd></dl>\n\
         <div data-role=\"chart\" class=\"chart\" aria-hidden=\"true\"></div>\n\
         <p class=\"hint\">Reads per second in blue, buys per second in red, one point a second.</p></section>\n\
         <div class=\"groups\" data-role=\"groups\"></div>\n\
         <section aria-labelledby=\"try-h\" class=\"card try\"><h2 id=\"try-h\">Try it</h2>\n\
         <p>Run a short workload of concurrent buys, restocks, price changes and reads at every consistency level \
         through this frontend (on books of its own), then check the recorded history: no oversell, conservation of \
         stock, one order per idempotency key, linearizable reads. Press fault buttons while it runs.</p>\n\
         <form data-role=\"try-form\" class=\"inline\"><label for=\"try-seconds\">Seconds</label>\
         <input id=\"try-seconds\" type=\"number\" min=\"2\" max=\"60\" value=\"8\">\
         <button type=\"submit\" data-role=\"try\" {}>Run</button></form>\n\
         <div data-role=\"try-status\" aria-live=\"polite\"></div></section>\n\
         <section aria-labelledby=\"changes-h\"><h2 id=\"changes-h\">Change stream</h2>\n\
         <ol class=\"changes\" data-role=\"changes\" reversed></ol></section>",
        if controls { "" } else { "disabled" },
    );
    page("Lab", Nav::Lab, if controls { "lab-control" } else { "lab" }, &main, "lab.js")
}

async fn asset(Path(name): Path<String>) -> Response {
    let (body, kind) = match name.as_str() {
        "app.css" => (CSS, "text/css; charset=utf-8"),
        "store.js" => (STORE_JS, "text/javascript; charset=utf-8"),
        "lab.js" => (LAB_JS, "text/javascript; charset=utf-8"),
        _ => return Problem::new(ErrorCode::NotFound, format!("no asset {name:?}")).into_response(),
    };
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode, header};
    use clap::Parser;
    use tower::ServiceExt;

    use super::escape;
    use crate::Frontend;
    use crate::config::Args;

    /// A frontend whose one node listens nowhere, with `extra` flags.
    fn app(extra: &[&str]) -> axum::Router {
        let mut args = vec!["frontend", "--nodes", "1=127.0.0.1:1", "--frontend-token", "t"];
        args.extend_from_slice(extra);
        let front = Arc::new(Frontend::new(Args::parse_from(args).resolve().unwrap()).unwrap());
        crate::routes::app(front)
    }

    async fn call(app: axum::Router, method: &str, uri: &str, token: Option<&str>) -> (StatusCode, String, String) {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let response = app.oneshot(request.body(Body::empty()).unwrap()).await.unwrap();
        let status = response.status();
        let kind =
            response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let body = String::from_utf8(to_bytes(response.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        (status, kind, body)
    }

    #[test]
    fn escape_neutralizes_markup() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }

    #[tokio::test]
    async fn pages_are_html_that_loads_only_this_frontends_assets() {
        for uri in ["/", "/book/3", "/history", "/staff", "/lab"] {
            let (status, kind, body) = call(app(&[]), "GET", uri, None).await;
            assert_eq!((status, kind.as_str()), (StatusCode::OK, "text/html; charset=utf-8"), "{uri}");
            assert!(!body.contains("http://") && !body.contains("https://"), "{uri} refers to another site");
            for asset in body.split("src=\"").skip(1).chain(body.split("href=\"").skip(1)) {
                assert!(asset.starts_with('/') || asset.starts_with('#'), "{uri}: {asset:.40}");
            }
        }
        let response = app(&[]).oneshot(Request::get("/").body(Body::empty()).unwrap()).await.unwrap();
        let csp = response.headers().get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap();
        assert!(csp.starts_with("default-src 'self'"), "{csp}");
        for (asset, kind) in [("app.css", "text/css"), ("store.js", "text/javascript"), ("lab.js", "text/javascript")] {
            let (status, got, _) = call(app(&[]), "GET", &format!("/assets/{asset}"), None).await;
            assert_eq!(status, StatusCode::OK);
            assert!(got.starts_with(kind), "{asset}: {got}");
        }
        let (status, kind, _) = call(app(&[]), "GET", "/assets/../../etc/passwd", None).await;
        assert_eq!((status, kind.as_str()), (StatusCode::NOT_FOUND, bazar_api::PROBLEM_CONTENT_TYPE));
        let (status, _, _) = call(app(&[]), "GET", "/book/zero", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[tokio::test]
    async fn without_a_supervisor_the_lab_is_read_only() {
        let (_, _, page) = call(app(&[]), "GET", "/lab", None).await;
        assert!(page.contains("Read-only") && page.contains("data-page=\"lab\""), "{page}");
        for uri in ["/lab/control/nodes/1/kill", "/lab/control/groups/catalog/transfer-leader", "/lab/control/heal"] {
            let (status, kind, _) = call(app(&[]), "POST", uri, Some("anything")).await;
            assert_eq!((status, kind.as_str()), (StatusCode::NOT_FOUND, bazar_api::PROBLEM_CONTENT_TYPE), "{uri}");
        }
    }

    #[tokio::test]
    async fn fault_buttons_need_the_lab_token() {
        // The supervisor listens nowhere: a call that got past the token
        // check would be a 503, not a 401.
        let lab = ["--lab-supervisor", "127.0.0.1:1", "--lab-token", "secret"];
        let (_, _, page) = call(app(&lab), "GET", "/lab", None).await;
        assert!(page.contains("data-page=\"lab-control\""));
        for token in [None, Some("wrong"), Some("secre"), Some("secrets")] {
            let (status, _, _) = call(app(&lab), "POST", "/lab/control/nodes/1/kill", token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        }
        let (status, _, _) = call(app(&lab), "POST", "/lab/control/nodes/1/explode", Some("secret")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _, body) = call(app(&lab), "POST", "/lab/control/nodes/1/kill", Some("secret")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("supervisor"), "{body}");
    }
}
