//! The client routes of a node: search, lookup, buy, orders, and the admin
//! writes to the catalog.
//!
//! Reads take `?consistency=linearizable|lease|cached` (default
//! `linearizable`; on a node, `cached` means "this replica as it is, with no
//! coordination"). Any replica serves any read; the answer carries
//! `X-Bazar-Served-By`, `X-Bazar-Cache: bypass` and `X-Bazar-Index`, the
//! applied index of the very view the answer was read from.
//!
//! Writes go to the leader of their group; elsewhere they are refused with
//! `421 not_leader` naming the leader, before anything is proposed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bazar_api::model::{parse_paging, validate_idempotency_key};
use bazar_api::{
    Book, BookPage, BookPatch, BuyRequest, CACHE_HEADER, CATALOG_INDEX_HEADER, Consistency, INDEX_HEADER, NewBook,
    Order, OrderFilter, OrderPage, OrderStatus, RestockRequest, SERVED_BY_HEADER,
};
use serde::Serialize;

use super::auth::Admin;
use super::error::{AppError, Id, JsonBody, OptionalJsonBody};
use crate::buy;
use crate::catalog::{Catalog, CatalogCommand, CatalogResponse};
use crate::config::PlantedBug;
use crate::error::Error;
use crate::node::Node;
use crate::orders::Orders;
use crate::raft::RaftGroup;
use crate::sm::{StateMachine, View};

/// Query parameters, refused with a problem when malformed.
pub struct Params(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(map) =
            axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| AppError::invalid(e.body_text()))?;
        Ok(Params(map))
    }
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The `min_index` a read must wait for; 0 when absent.
    pub fn min_index(&self) -> Result<u64, AppError> {
        match self.get(bazar_api::MIN_INDEX_PARAM) {
            None | Some("") => Ok(0),
            Some(s) => s.parse().map_err(|_| AppError::invalid(format!("invalid min_index {s:?}"))),
        }
    }

    /// The requested consistency; linearizable when absent.
    pub fn consistency(&self) -> Result<Consistency, AppError> {
        match self.get("consistency") {
            None | Some("") => Ok(Consistency::Linearizable),
            Some(s) => s.parse().map_err(AppError::invalid),
        }
    }

    fn paging(&self) -> Result<(usize, u64), AppError> {
        parse_paging(self.get("limit"), self.get("cursor")).map_err(AppError::invalid)
    }
}

/// Makes `group`'s local replica ready for a read with these parameters:
/// at the requested consistency, and at least at `min_index`.
async fn prepare_read<S: StateMachine>(node: &Node, group: &RaftGroup<S>, params: &Params) -> Result<(), AppError> {
    let mut consistency = params.consistency()?;
    if node.config.planted_bug == Some(PlantedBug::UnconfirmedLeaderReads) && group.is_leader() {
        // The planted bug: believing is not leading.
        consistency = Consistency::Cached;
    }
    let min_index = params.min_index()?;
    let deadline = node.deadline();
    group.linearize(consistency, deadline).await?;
    if min_index > 0 {
        group.wait_applied(min_index, deadline).await?;
    }
    // A node that has not joined the group yet (started empty, waiting to be
    // added) has an empty state machine: its "not found" would be a lie.
    if group.metrics().last_applied.is_none() {
        return Err(Error::Unavailable(format!(
            "this node has not joined the {} group yet; ask another node",
            S::GROUP
        ))
        .into());
    }
    Ok(())
}

/// The catalog as this replica holds it, once it holds the whole initial
/// catalog. A replica still catching up from the start of the log (a new
/// node) may lack books that every other replica has; it must not answer
/// that they do not exist.
fn loaded_catalog(node: &Node) -> Result<View<'_>, AppError> {
    let view = node.catalog.view();
    if !Catalog::is_seeded(&view)? {
        return Err(Error::Unavailable(
            "this replica has not loaded the initial catalog yet (the cluster is being founded, or this node is \
             catching up); retry, or ask another node"
                .into(),
        )
        .into());
    }
    Ok(view)
}

/// A read answer with the headers that describe it.
pub fn read_response<T: Serialize>(node_id: u64, index: u64, body: T) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_HEADER, HeaderValue::from_static("bypass"));
    headers.insert(SERVED_BY_HEADER, HeaderValue::from(node_id));
    headers.insert(INDEX_HEADER, HeaderValue::from(index));
    response
}

/// `GET /books?topic=&limit=&cursor=&consistency=`
pub async fn search(State(node): State<Arc<Node>>, params: Params) -> Result<Response, AppError> {
    let (limit, after) = params.paging()?;
    let topic = params.get("topic").map(str::trim).filter(|t| !t.is_empty());
    prepare_read(&node, &node.catalog, &params).await?;
    let view = loaded_catalog(&node)?;
    let index = view.applied_index()?;
    let (books, next) = Catalog::search(&view, topic, after, limit)?;
    let page = BookPage { books, next_cursor: next.map(|id| id.to_string()) };
    Ok(read_response(node.id, index, page))
}

/// `GET /books/{id}`
pub async fn lookup(State(node): State<Arc<Node>>, Id(id): Id, params: Params) -> Result<Response, AppError> {
    prepare_read(&node, &node.catalog, &params).await?;
    let view = loaded_catalog(&node)?;
    let index = view.applied_index()?;
    let book = Catalog::book(&view, id)?.ok_or_else(|| Error::NotFound(format!("no book with id {id}")))?;
    Ok(read_response(node.id, index, book))
}

/// `GET /orders/{id}`
pub async fn order(State(node): State<Arc<Node>>, Id(id): Id, params: Params) -> Result<Response, AppError> {
    prepare_read(&node, &node.orders, &params).await?;
    let view = node.orders.view();
    let index = view.applied_index()?;
    let order = Orders::order(&view, id)?.ok_or_else(|| Error::NotFound(format!("no order with id {id}")))?;
    drop(view);
    let mut orders = resolve_pending(&node, vec![order], &params).await?;
    let unsettled = orders.iter().any(|o| o.status == OrderStatus::Pending);
    Ok(order_response(read_response(node.id, index, orders.remove(0)), unsettled))
}

/// Shows each pending order among `orders` as it will be settled, from the
/// reservation under its key (see [`crate::buy`]). The catalog is read at
/// the requested consistency but at least under the lease, whatever was
/// asked for: a buy is answered once its reservation is committed, and a
/// read after that answer must find it, on any replica.
async fn resolve_pending(node: &Node, orders: Vec<Order>, params: &Params) -> Result<Vec<Order>, AppError> {
    if orders.iter().all(|o| o.status != OrderStatus::Pending) {
        return Ok(orders);
    }
    let consistency = match params.consistency()? {
        Consistency::Linearizable => Consistency::Linearizable,
        Consistency::Lease | Consistency::Cached => Consistency::Lease,
    };
    node.catalog.linearize(consistency, node.deadline()).await?;
    let catalog = node.catalog.view();
    Ok(orders.into_iter().map(|o| Orders::resolve(o, &catalog)).collect::<Result<_, _>>()?)
}

/// An answer about orders; one that shows an order still pending (its buy
/// in flight) must not be cached: the buy's reservation may commit right
/// after this read, which changes how the order reads without any change to
/// the orders group, so nothing would invalidate the cached answer before
/// the settlement, and the buyer, answered `201` meanwhile, could read its
/// order pending from the cache.
fn order_response(mut response: Response, unsettled: bool) -> Response {
    if unsettled {
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// `GET /orders?book_id=|buyer=&limit=&cursor=`
pub async fn orders(State(node): State<Arc<Node>>, params: Params) -> Result<Response, AppError> {
    let (limit, after) = params.paging()?;
    let which = OrderFilter::parse(params.get("book_id"), params.get("buyer")).map_err(AppError::invalid)?;
    prepare_read(&node, &node.orders, &params).await?;
    let view = node.orders.view();
    let index = view.applied_index()?;
    let (orders, next) = Orders::list(&view, &which, after, limit)?;
    drop(view);
    let orders = resolve_pending(&node, orders, &params).await?;
    let unsettled = orders.iter().any(|o| o.status == OrderStatus::Pending);
    let page = OrderPage { orders, next_cursor: next.map(|id| id.to_string()) };
    Ok(order_response(read_response(node.id, index, page), unsettled))
}

/// `POST /books/{id}/buy`
pub async fn buy(
    State(node): State<Arc<Node>>,
    Id(id): Id,
    headers: HeaderMap,
    OptionalJsonBody(body): OptionalJsonBody<BuyRequest>,
) -> Result<Response, AppError> {
    let quantity = body.quantity().map_err(AppError::invalid)?;
    let buyer = body.buyer().map_err(AppError::invalid)?;
    let key = match headers.get(bazar_api::IDEMPOTENCY_KEY_HEADER) {
        None => None,
        Some(v) => {
            let key = v.to_str().map_err(|_| AppError::invalid("Idempotency-Key must be visible ASCII"))?;
            validate_idempotency_key(key).map_err(AppError::invalid)?;
            Some(key.to_string())
        }
    };
    let purchase = buy::Purchase { book_id: id, quantity, buyer, key };
    let bought = node.buy.buy(purchase, node.deadline()).await?;
    let mut response = (StatusCode::CREATED, Json(bought.order)).into_response();
    let headers = response.headers_mut();
    headers.insert(INDEX_HEADER, HeaderValue::from(bought.orders_index));
    headers.insert(CATALOG_INDEX_HEADER, HeaderValue::from(bought.catalog_index));
    Ok(response)
}

/// A written book with the catalog index it was committed at.
fn written(status: StatusCode, book: Book, index: u64) -> Response {
    let mut response = (status, Json(book)).into_response();
    response.headers_mut().insert(INDEX_HEADER, HeaderValue::from(index));
    response
}

/// Proposes a catalog command as the catalog leader and returns the book it
/// produced, with the index it was committed at.
async fn write_book(node: &Node, cmd: CatalogCommand) -> Result<(Book, u64), AppError> {
    if !node.catalog.is_leader() {
        return Err(node.catalog.not_leader().into());
    }
    let book_id = match &cmd {
        CatalogCommand::Restock { book_id, .. } | CatalogCommand::Update { book_id, .. } => Some(*book_id),
        _ => None,
    };
    let committed = node.catalog.write(cmd, node.deadline()).await?;
    match committed.response {
        CatalogResponse::Book(book) => Ok((book, committed.index)),
        CatalogResponse::NotFound => {
            Err(Error::NotFound(format!("no book with id {}", book_id.unwrap_or_default())).into())
        }
        CatalogResponse::DuplicateIsbn { existing_id } => {
            Err(Error::Conflict(format!("book {existing_id} already has this ISBN")).into())
        }
        CatalogResponse::StockOverflow => Err(AppError::invalid("restock would overflow the stock counter")),
        other => Err(Error::Internal(format!("unexpected catalog answer {other:?}")).into()),
    }
}

/// `POST /books` (admin)
pub async fn add_book(
    _: Admin,
    State(node): State<Arc<Node>>,
    JsonBody(new): JsonBody<NewBook>,
) -> Result<Response, AppError> {
    let new = new.validate().map_err(AppError::invalid)?;
    let (book, index) = write_book(&node, CatalogCommand::AddBook(new)).await?;
    Ok(written(StatusCode::CREATED, book, index))
}

/// `POST /books/{id}/restock` (admin)
pub async fn restock(
    _: Admin,
    State(node): State<Arc<Node>>,
    Id(id): Id,
    JsonBody(body): JsonBody<RestockRequest>,
) -> Result<Response, AppError> {
    let quantity = body.quantity().map_err(AppError::invalid)?;
    let (book, index) = write_book(&node, CatalogCommand::Restock { book_id: id, quantity }).await?;
    Ok(written(StatusCode::OK, book, index))
}

/// `PATCH /books/{id}` (admin)
pub async fn update_book(
    _: Admin,
    State(node): State<Arc<Node>>,
    Id(id): Id,
    JsonBody(patch): JsonBody<BookPatch>,
) -> Result<Response, AppError> {
    let patch = patch.validate().map_err(AppError::invalid)?;
    let (book, index) = write_book(&node, CatalogCommand::Update { book_id: id, patch }).await?;
    Ok(written(StatusCode::OK, book, index))
}
