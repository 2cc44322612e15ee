//! The web face in a real browser: headless Chromium driven through
//! WebDriver (`chromedriver`), against a lab cluster of real processes
//! (three raft nodes, a frontend, the lab supervisor).
//!
//! The storefront: search a topic, open a book, buy with a double click and
//! find exactly one order, see the stock drop. The lab: kill the catalog
//! leader with its button and see the page show a new leader within 2 s (by
//! the page's own timestamps: the click's and the first picture naming the
//! new leader), while a buy from the storefront succeeds; restart the node;
//! run the try-it workload and read the checker's verdict.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`,
//! `chromium-driver`; scripts/test.sh installs them as root). Without them
//! the test fails and says why, unless BAZAR_SKIP_BROWSER=1.
//! BAZAR_SCREENSHOTS=DIR saves `storefront.png` and `lab.png` there.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bazar_api::{Group, OrderFilter, OrderStatus};
use bazar_tests::lab::{self, Lab, LabConfig};
use bazar_tests::{ADMIN_TOKEN, free_port};
use fantoccini::actions::{InputSource, MOUSE_BUTTON_LEFT, MouseActions, PointerAction};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use serde_json::{Value, json};
use tokio::time::Instant;

/// A chromedriver process and the browsers it starts, in their own process
/// group, killed together when dropped.
struct Driver {
    child: Child,
    url: String,
    _profile: tempfile::TempDir,
    log: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the chromium processes it started.
        bazar_tests::signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

/// Starts chromedriver and a headless Chromium session, or says why not.
async fn start_browser() -> Result<(Driver, Browser), String> {
    let driver = find_program(&["chromedriver"]).ok_or(
        "chromedriver not found: install Debian's chromium and chromium-driver (scripts/test.sh does, as root)",
    )?;
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"])
        .ok_or("chromium not found: install Debian's chromium (scripts/test.sh does, as root)")?;
    let profile = tempfile::Builder::new().prefix("bazar-chromium-").tempdir().map_err(|e| e.to_string())?;
    let log = profile.path().join("chromedriver.log");
    let port = free_port();
    let child = Command::new(&driver)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that the browsers it starts die with it.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", driver.display()))?;
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}"), _profile: profile, log };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{}/status", driver.url)).send().await.is_err() {
        if Instant::now() > deadline {
            return Err(format!("chromedriver did not answer on {} within 30 s", driver.url));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let user_data = driver._profile.path().join("profile");
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--window-size=1280,1100", format!("--user-data-dir={}", user_data.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let browser = ClientBuilder::new(connector).capabilities(caps).connect(&driver.url).await.map_err(|e| {
        let log = std::fs::read_to_string(&driver.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!(
            "chromium did not start under chromedriver: {e}\nchromedriver log (last lines, newest first):\n{}",
            tail.join("\n")
        )
    })?;
    Ok((driver, browser))
}

/// Runs `script` in the page and returns its value.
async fn js(browser: &Browser, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
}

/// Waits until `script` returns something truthy (not null/false/""/0) and returns it.
async fn wait_js(browser: &Browser, what: &str, timeout: Duration, script: &str) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = js(browser, script).await;
        let truthy = match &v {
            Value::Null | Value::Bool(false) => false,
            Value::String(s) => !s.is_empty(),
            Value::Number(n) => n.as_f64() != Some(0.0),
            _ => true,
        };
        if truthy {
            return v;
        }
        if Instant::now() > deadline {
            let text = js(browser, "return document.querySelector('main').innerText").await;
            panic!("{what}: not within {timeout:?}; the page says:\n{}", text.as_str().unwrap_or(""));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn screenshot(browser: &Browser, name: &str) {
    let Some(dir) = std::env::var_os("BAZAR_SCREENSHOTS") else { return };
    let dir = Path::new(&dir);
    std::fs::create_dir_all(dir).expect("screenshot folder");
    let png = browser.screenshot().await.expect("screenshot");
    std::fs::write(dir.join(name), png).expect("writing the screenshot");
    eprintln!("saved {}", dir.join(name).display());
}

async fn click(browser: &Browser, css: &str) {
    browser.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}")).click().await.expect("click");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storefront_and_lab_work_in_a_real_browser() {
    if std::env::var("BAZAR_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("skipped: BAZAR_SKIP_BROWSER=1");
        return;
    }
    let (driver, browser) = match start_browser().await {
        Ok(b) => b,
        Err(why) => panic!("the browser test cannot run: {why}\n(set BAZAR_SKIP_BROWSER=1 to skip it)"),
    };

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("supervisor port");
    let token = format!("{:032x}", rand::random::<u128>());
    let config = LabConfig {
        nodes: 3,
        frontend: format!("127.0.0.1:{}", free_port()).parse().expect("address"),
        listen: listener.local_addr().expect("address"),
        token,
    };
    let lab = Arc::new(Lab::start(&config, &listener).await.expect("lab"));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(lab::serve(lab.clone(), listener, async {
        let _ = stop_rx.await;
    }));
    let base = lab.frontend_url();
    let api = bazar_client::Client::builder(&base).admin_token(ADMIN_TOKEN).build().expect("client");

    // ---- storefront: search by topic.
    browser.goto(&format!("{base}/")).await.expect("open the storefront");
    wait_js(&browser, "topics listed", Duration::from_secs(15),
        "return [...document.querySelectorAll('[data-role=topics] a')].map(a => a.textContent).includes('distributed systems')").await;
    let topic = browser.find(Locator::Id("topic")).await.expect("topic field");
    topic.send_keys("distributed systems").await.expect("type");
    click(&browser, "form.search button[type=submit]").await;
    wait_js(&browser, "search results", Duration::from_secs(15),
        "return location.search.includes('topic=') && [...document.querySelectorAll('[data-role=results] a')].some(a => a.textContent === 'RPCs for Noobs')").await;
    let source = js(&browser, "return document.querySelector('[data-role=source]').textContent").await;
    assert!(source.as_str().is_some_and(|s| s.contains("log index")), "the results say where they came from: {source}");

    // ---- a book's page.
    browser
        .find(Locator::LinkText("RPCs for Noobs"))
        .await
        .expect("the book's link")
        .click()
        .await
        .expect("open the book");
    let stock_before = wait_js(
        &browser,
        "the book's stock",
        Duration::from_secs(15),
        "return document.querySelector('[data-role=stock]').dataset.stock",
    )
    .await;
    let stock_before: u64 = stock_before.as_str().and_then(|s| s.parse().ok()).expect("stock is a number");
    let book_id: u64 = js(&browser, "return document.querySelector('article.book').dataset.book")
        .await
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("book id");

    // ---- buy two copies with a double click: one purchase key, one order.
    let buyer = format!("browser-{:08x}", rand::random::<u32>());
    let quantity = browser.find(Locator::Id("quantity")).await.expect("quantity");
    quantity.clear().await.expect("clear");
    quantity.send_keys("2").await.expect("type");
    browser.find(Locator::Id("buyer")).await.expect("buyer").send_keys(&buyer).await.expect("type");
    // Typing fires `change` only on blur: leave the field before buying, as a shopper does.
    js(&browser, "document.getElementById('buyer').blur(); return true").await;
    let button = browser.find(Locator::Css("[data-role=buy]")).await.expect("buy button");
    let double_click = MouseActions::new("mouse".into())
        .then(PointerAction::MoveToElement { element: button, duration: None, x: 0.0, y: 0.0 })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Down { button: MOUSE_BUTTON_LEFT })
        .then(PointerAction::Up { button: MOUSE_BUTTON_LEFT });
    browser.perform_actions(double_click).await.expect("double click");
    let answers = wait_js(&browser, "both clicks answered", Duration::from_secs(20),
        "const o = document.querySelector('[data-role=outcome]'); return o.dataset.answers === '2' && o.dataset.orderId ? o.dataset.orders : null").await;
    assert_eq!(answers, json!("1"), "two clicks of one purchase made one order");
    let order_id: u64 = js(&browser, "return document.querySelector('[data-role=outcome]').dataset.orderId")
        .await
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("order id");
    let says = js(&browser, "return document.querySelector('[data-role=outcome]').innerText").await;
    assert!(
        says.as_str().is_some_and(|s| s.contains("2 times") && s.contains("one order")),
        "the page says so: {says}"
    );
    wait_js(
        &browser,
        "the stock drops by 2",
        Duration::from_secs(10),
        &format!("return document.querySelector('[data-role=stock]').dataset.stock === '{}'", stock_before - 2),
    )
    .await;
    screenshot(&browser, "storefront.png").await;

    // The store agrees: exactly one order for this buyer.
    let orders = api.list_all_orders(&OrderFilter::Buyer(buyer.clone()), None).await.expect("orders of the buyer");
    assert_eq!(orders.len(), 1, "one order for {buyer}: {orders:?}");
    assert_eq!((orders[0].order_id, orders[0].book_id, orders[0].quantity), (order_id, book_id, 2));
    assert_eq!(orders[0].status, OrderStatus::Confirmed);
    // And the order-history page lists it.
    browser.goto(&format!("{base}/history?buyer={buyer}")).await.expect("history page");
    let rows = wait_js(
        &browser,
        "the order history",
        Duration::from_secs(10),
        "return document.querySelectorAll('[data-role=orders] tr[data-order]').length",
    )
    .await;
    assert_eq!(rows, json!(1));

    // ---- staff: an ISBN refused before sending, a new book, then an empty shelf.
    browser.goto(&format!("{base}/staff")).await.expect("staff page");
    browser.find(Locator::Id("token")).await.expect("token field").send_keys(ADMIN_TOKEN).await.expect("type");
    click(&browser, "[data-role=token-form] button").await;
    let isbn = bazar_api::isbn::from_number(rand::random_range(100_000_000..999_999_999));
    let last = isbn.as_bytes()[12] - b'0';
    let wrong = format!("{}{}", &isbn[..12], (last + 1) % 10);
    let fill = |id: &'static str, text: String| {
        let browser = browser.clone();
        async move {
            let field = browser.find(Locator::Id(id)).await.expect("field");
            field.clear().await.expect("clear");
            field.send_keys(&text).await.expect("type");
        }
    };
    fill("isbn", wrong).await;
    fill("title", "A Book Added by the Browser Test".into()).await;
    fill("btopic", "browser tests".into()).await;
    fill("price", "999".into()).await;
    fill("stock", "1".into()).await;
    click(&browser, "[data-role=add-form] button").await;
    let refused = wait_js(
        &browser,
        "the bad ISBN refused",
        Duration::from_secs(5),
        "return document.querySelector('[data-role=message]').textContent",
    )
    .await;
    assert!(refused.as_str().is_some_and(|m| m.contains("check digit")), "{refused}");
    fill("isbn", isbn).await;
    click(&browser, "[data-role=add-form] button").await;
    let added = wait_js(
        &browser,
        "the book added",
        Duration::from_secs(15),
        "const a = document.querySelector('[data-role=outcome] a'); return a && a.getAttribute('href')",
    )
    .await;
    let new_book = added.as_str().expect("link").trim_start_matches("/book/").to_string();
    browser.goto(&format!("{base}/book/{new_book}")).await.expect("the new book's page");
    wait_js(
        &browser,
        "the new book's stock",
        Duration::from_secs(15),
        "return document.querySelector('[data-role=stock]').dataset.stock === '1'",
    )
    .await;
    let quantity = browser.find(Locator::Id("quantity")).await.expect("quantity");
    quantity.clear().await.expect("clear");
    quantity.send_keys("2").await.expect("type");
    js(&browser, "document.getElementById('quantity').blur(); return true").await;
    click(&browser, "[data-role=buy]").await;
    let refused = wait_js(
        &browser,
        "out of stock said",
        Duration::from_secs(15),
        "const b = document.querySelector('[data-role=outcome] .bad'); return b && b.textContent",
    )
    .await;
    assert!(refused.as_str().is_some_and(|m| m.starts_with("Out of stock: nothing was bought")), "{refused}");
    assert_eq!(js(&browser, "return document.querySelector('[data-role=stock]').dataset.stock").await, json!("1"));

    // ---- the lab: kill the catalog leader with its button.
    browser.goto(&lab.lab_link()).await.expect("open the lab");
    let leader = wait_js(
        &browser,
        "the catalog leader shown",
        Duration::from_secs(15),
        "const s = document.querySelector('[data-group=catalog]'); return s && s.dataset.leader",
    )
    .await;
    let leader: u64 = leader.as_str().and_then(|s| s.parse().ok()).expect("leader id");
    let kill = format!("[data-group=catalog] tr[data-node='{leader}'] button[data-action=kill]");
    wait_js(
        &browser,
        "the kill button enabled",
        Duration::from_secs(10),
        &format!("const b = document.querySelector(\"{kill}\"); return b && !b.disabled"),
    )
    .await;
    click(&browser, &kill).await;
    let shown = wait_js(
        &browser,
        "a new catalog leader shown",
        Duration::from_secs(30),
        &format!(
            "const s = document.querySelector('[data-group=catalog]'); \
         const a = window.labActions.find(a => a.path === 'nodes/{leader}/kill'); \
         return a && a.status === 200 && s.dataset.leader !== '' && s.dataset.leader !== '{leader}' \
           ? {{ leader: s.dataset.leader, shown_at: Number(s.dataset.shownAt), clicked_at: a.clicked_at }} : null"
        ),
    )
    .await;
    let after_ms = shown["shown_at"].as_f64().expect("shown_at") - shown["clicked_at"].as_f64().expect("clicked_at");
    eprintln!("new catalog leader {} shown {after_ms} ms after the kill button was clicked", shown["leader"]);
    assert!(after_ms <= 2000.0, "the lab showed a new catalog leader {after_ms} ms after the kill (bound: 2000 ms)");
    let new_leader: u64 = shown["leader"].as_str().and_then(|s| s.parse().ok()).expect("new leader");
    assert_ne!(new_leader, leader);

    // ---- meanwhile, the storefront still sells (in a second tab).
    let lab_tab = browser.window().await.expect("lab tab");
    let shop = browser.new_window(true).await.expect("new tab");
    browser.switch_to_window(shop.handle).await.expect("switch");
    browser.goto(&format!("{base}/book/3")).await.expect("book 3");
    wait_js(
        &browser,
        "book 3 loaded",
        Duration::from_secs(15),
        "return document.querySelector('[data-role=stock]').dataset.stock",
    )
    .await;
    click(&browser, "[data-role=buy]").await;
    let bought = wait_js(&browser, "a buy with the catalog leader dead", Duration::from_secs(20),
        "const o = document.querySelector('[data-role=outcome]'); return o.dataset.orderId || (o.querySelector('.bad') && 'refused: ' + o.innerText)").await;
    assert!(!bought.as_str().unwrap_or("refused").starts_with("refused"), "the buy failed: {bought}");
    browser.switch_to_window(lab_tab).await.expect("back to the lab");
    // The buy shows up in the change stream.
    wait_js(
        &browser,
        "the buy in the change stream",
        Duration::from_secs(10),
        "return [...document.querySelectorAll('[data-role=changes] li')].some(li => li.textContent.includes('book/3'))",
    )
    .await;

    // ---- restart the killed node, then run the try-it workload and read the verdict.
    click(&browser, &format!("[data-role=nodes] tr[data-node='{leader}'] button[data-action=restart]")).await;
    wait_js(&browser, "the restarted node back in the catalog group", Duration::from_secs(30), &format!(
        "const r = document.querySelector(\"[data-group=catalog] tr[data-node='{leader}']\"); return r && r.dataset.state === 'Follower'")).await;
    let seconds = browser.find(Locator::Id("try-seconds")).await.expect("seconds");
    seconds.clear().await.expect("clear");
    seconds.send_keys("3").await.expect("type");
    click(&browser, "[data-role=try]").await;
    let verdict = wait_js(&browser, "the try-it verdict", Duration::from_secs(120),
        "const t = document.querySelector('[data-role=try-status]'); return ['done', 'failed'].includes(t.dataset.state) ? t.dataset.state + ':' + (t.dataset.passed || '') + ':' + t.innerText : null").await;
    assert!(verdict.as_str().is_some_and(|v| v.starts_with("done:true:")), "the checker's verdict: {verdict}");
    // Tall enough to show both groups, the processes and the verdict.
    browser.set_window_size(1280, 2400).await.expect("window size");
    js(&browser, "window.scrollTo(0, 0); return true").await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    screenshot(&browser, "lab.png").await;

    // The cluster agrees on the leader the page showed (or a later one).
    let mut cluster = lab.cluster().lock().await;
    let now = cluster.wait_leader(Group::Catalog, None, Duration::from_secs(10)).await;
    drop(cluster);
    eprintln!("catalog leader now: node {now}");

    let _ = browser.close().await;
    drop(driver);
    let _ = stop_tx.send(());
    let _ = served.await;
    lab.stop().await;
}
