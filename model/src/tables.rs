//! The event tables of docs/metrics.md: one struct per table, its Arrow schema, and the
//! conversion of rows to a `RecordBatch`. Every table also carries `received_at`, the
//! time chatlake accepted the event.
//!
//! Columns are declared once in an `event_table!` invocation; the struct, the schema
//! and the batch builder are generated from it, so they cannot disagree.

use crate::error::Error;
use crate::time::Ts;
use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, OnceLock};

/// A Rust type that maps to one Arrow column.
pub trait Column: Sized {
    /// Whether the column admits NULL.
    const NULLABLE: bool;
    /// The Arrow type of the column.
    fn data_type() -> DataType;
    /// Builds the column from the rows' values.
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self>) -> ArrayRef
    where
        Self: 'a;
}

macro_rules! column {
    ($ty:ty, $builder:ty, $dt:expr, |$b:ident, $v:ident| $append:expr, |$ob:ident, $ov:ident| $oappend:expr) => {
        impl Column for $ty {
            const NULLABLE: bool = false;
            fn data_type() -> DataType {
                $dt
            }
            fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self>) -> ArrayRef {
                let mut $b = <$builder>::with_capacity(values.len());
                for $v in values {
                    $append;
                }
                Arc::new($b.finish())
            }
        }
        impl Column for Option<$ty> {
            const NULLABLE: bool = true;
            fn data_type() -> DataType {
                $dt
            }
            fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self>) -> ArrayRef {
                let mut $ob = <$builder>::with_capacity(values.len());
                for $ov in values {
                    $oappend;
                }
                Arc::new($ob.finish())
            }
        }
    };
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
}

impl Column for String {
    const NULLABLE: bool = false;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self>) -> ArrayRef {
        let mut b = StringBuilder::with_capacity(values.len(), values.len() * 16);
        for v in values {
            b.append_value(v);
        }
        Arc::new(b.finish())
    }
}
impl Column for Option<String> {
    const NULLABLE: bool = true;
    fn data_type() -> DataType {
        DataType::Utf8
    }
    fn build<'a>(values: impl ExactSizeIterator<Item = &'a Self>) -> ArrayRef {
        let mut b = StringBuilder::with_capacity(values.len(), values.len() * 8);
        for v in values {
            b.append_option(v.as_deref());
        }
        Arc::new(b.finish())
    }
}
column!(
    Ts,
    TimestampMicrosecondBuilder,
    ts_type(),
    |b, v| b.append_value(v.0),
    |b, v| b.append_option(v.map(|t| t.0))
);
column!(
    f64,
    Float64Builder,
    DataType::Float64,
    |b, v| b.append_value(*v),
    |b, v| b.append_option(*v)
);
column!(
    i64,
    Int64Builder,
    DataType::Int64,
    |b, v| b.append_value(*v),
    |b, v| b.append_option(*v)
);
column!(
    bool,
    BooleanBuilder,
    DataType::Boolean,
    |b, v| b.append_value(*v),
    |b, v| b.append_option(*v)
);

macro_rules! event_table {
    ($(#[$m:meta])* $name:ident, $table:literal, { $( $(#[$fm:meta])* $field:ident : $ty:ty ),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $( $(#[$fm])* pub $field: $ty, )*
        }

        impl $name {
            /// The lake table's name.
            pub const TABLE: &'static str = $table;

            /// The table's Arrow schema.
            pub fn schema() -> SchemaRef {
                static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
                SCHEMA
                    .get_or_init(|| {
                        Arc::new(Schema::new(vec![
                            $( Field::new(stringify!($field).trim_start_matches("r#"), <$ty as Column>::data_type(), <$ty as Column>::NULLABLE), )*
                        ]))
                    })
                    .clone()
            }

            /// Rows to one record batch, in the given order.
            pub fn to_batch(rows: &[&$name]) -> Result<RecordBatch, Error> {
                let columns: Vec<ArrayRef> = vec![
                    $( <$ty as Column>::build(rows.iter().map(|r| &r.$field)), )*
                ];
                RecordBatch::try_new(Self::schema(), columns)
                    .map_err(|source| Error::BuildBatch { table: $table, source })
            }
        }
    };
}

event_table!(
    /// A message the sender handed to the Cloud API (`sends`, key `message_id`).
    SendEvent, "sends", {
    /// Cloud API `wamid`.
    message_id: String,
    ts: Ts,
    phone_hash: String,
    campaign_id: String,
    template: String,
    /// `marketing` / `utility` / `authentication` / `service`.
    category: String,
    experiment_id: Option<String>,
    arm: Option<String>,
    journey: Option<String>,
    step: Option<i64>,
    cart_id: Option<String>,
    segment: Option<String>,
    country: Option<String>,
    received_at: Ts,
});

event_table!(
    /// A message status webhook (`statuses`, key (`message_id`, `status`)).
    StatusEvent, "statuses", {
    message_id: String,
    /// `sent` / `delivered` / `read` / `failed` (and `played` for voice messages).
    status: String,
    ts: Ts,
    phone_hash: String,
    conversation_id: Option<String>,
    /// `conversation.origin.type`.
    conversation_origin: Option<String>,
    pricing_category: Option<String>,
    /// `CBP` or `PMP`.
    pricing_model: Option<String>,
    /// PMP `regular` / `free_customer_service` / `free_entry_point`.
    pricing_type: Option<String>,
    billable: Option<bool>,
    error_code: Option<i64>,
    error_title: Option<String>,
    /// `individual` or `group`.
    recipient_type: Option<String>,
    /// Our own tracker echoed back by Meta.
    biz_opaque_callback_data: Option<String>,
    received_at: Ts,
});

event_table!(
    /// An inbound message (`inbound`, key `message_id`). Its text is never stored: only
    /// its classified intent and length.
    InboundEvent, "inbound", {
    message_id: String,
    ts: Ts,
    phone_hash: String,
    /// WhatsApp message type (`text`, `button`, `interactive`, `reaction`, …).
    #[serde(rename = "type")]
    r#type: String,
    /// The message it quotes; for a reaction, the message reacted to.
    context_message_id: Option<String>,
    /// `stop` / `start` / `help` / `other`.
    intent: String,
    button_payload: Option<String>,
    /// Characters of the text (body, button text or reply title), when there is text.
    text_length: Option<i64>,
    /// Click-to-WhatsApp referral `source_type` (`ad`, `post`) and `source_id`.
    referral_source_type: Option<String>,
    referral_source_id: Option<String>,
    /// An error Meta attached to the message (e.g. 131051 unsupported type).
    error_code: Option<i64>,
    received_at: Ts,
});

event_table!(
    /// A tracked-link click (`clicks`, key `click_id`).
    ClickEvent, "clicks", {
    click_id: String,
    message_id: String,
    ts: Ts,
    phone_hash: String,
    url: String,
    received_at: Ts,
});

event_table!(
    /// An order (`orders`, key `order_id`, latest `updated_at` wins).
    OrderEvent, "orders", {
    /// Text of the shop's id (Shopify's 64-bit integer, exact).
    order_id: String,
    ts: Ts,
    updated_at: Option<Ts>,
    /// NULL when the order carries no usable phone number.
    phone_hash: Option<String>,
    total: f64,
    currency: String,
    cart_id: Option<String>,
    utm_source: Option<String>,
    utm_medium: Option<String>,
    utm_campaign: Option<String>,
    utm_content: Option<String>,
    test: bool,
    cancelled: bool,
    /// `shopify` or `api`.
    source: String,
    received_at: Ts,
});

event_table!(
    /// An abandoned cart / checkout (`carts`, key `cart_id`).
    CartEvent, "carts", {
    cart_id: String,
    /// When the cart was abandoned.
    ts: Ts,
    /// NULL when the checkout carries no usable phone number.
    phone_hash: Option<String>,
    value: f64,
    currency: String,
    source: String,
    received_at: Ts,
});

event_table!(
    /// A support-case event (`cases`, key `event_id`).
    CaseEvent, "cases", {
    event_id: String,
    case_id: String,
    /// `opened` / `first_response` / `handoff` / `resolved` / `reopened`.
    event: String,
    ts: Ts,
    phone_hash: String,
    /// `bot` / `agent` / `customer`.
    actor: String,
    /// 1–5.
    csat: Option<i64>,
    received_at: Ts,
});

event_table!(
    /// A consent change (`consent`, key `event_id`).
    ConsentEvent, "consent", {
    event_id: String,
    ts: Ts,
    phone_hash: String,
    /// `opt_in` / `opt_out`.
    action: String,
    /// `marketing` / `utility` / `authentication` / `all`.
    scope: String,
    source: String,
    policy_version: String,
    received_at: Ts,
});

event_table!(
    /// An experiment assignment (`assignments`, key (`experiment_id`, `phone_hash`)).
    AssignmentEvent, "assignments", {
    experiment_id: String,
    phone_hash: String,
    arm: String,
    ts: Ts,
    received_at: Ts,
});

event_table!(
    /// A recipient the sender did not message, and why (`send_skips`).
    SendSkipEvent, "send_skips", {
    request_id: String,
    ts: Ts,
    phone_hash: String,
    campaign_id: String,
    reason: String,
    error_code: Option<i64>,
    received_at: Ts,
});

/// The lake's event tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    Sends,
    Statuses,
    Inbound,
    Clicks,
    Orders,
    Carts,
    Cases,
    Consent,
    Assignments,
    SendSkips,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 10] = [
        Table::Sends,
        Table::Statuses,
        Table::Inbound,
        Table::Clicks,
        Table::Orders,
        Table::Carts,
        Table::Cases,
        Table::Consent,
        Table::Assignments,
        Table::SendSkips,
    ];

    /// The table's name in the lake.
    pub fn name(self) -> &'static str {
        match self {
            Table::Sends => SendEvent::TABLE,
            Table::Statuses => StatusEvent::TABLE,
            Table::Inbound => InboundEvent::TABLE,
            Table::Clicks => ClickEvent::TABLE,
            Table::Orders => OrderEvent::TABLE,
            Table::Carts => CartEvent::TABLE,
            Table::Cases => CaseEvent::TABLE,
            Table::Consent => ConsentEvent::TABLE,
            Table::Assignments => AssignmentEvent::TABLE,
            Table::SendSkips => SendSkipEvent::TABLE,
        }
    }

    /// Looks a table up by name.
    pub fn from_name(name: &str) -> Option<Table> {
        Table::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The table's Arrow schema.
    pub fn schema(self) -> SchemaRef {
        match self {
            Table::Sends => SendEvent::schema(),
            Table::Statuses => StatusEvent::schema(),
            Table::Inbound => InboundEvent::schema(),
            Table::Clicks => ClickEvent::schema(),
            Table::Orders => OrderEvent::schema(),
            Table::Carts => CartEvent::schema(),
            Table::Cases => CaseEvent::schema(),
            Table::Consent => ConsentEvent::schema(),
            Table::Assignments => AssignmentEvent::schema(),
            Table::SendSkips => SendSkipEvent::schema(),
        }
    }
}

/// One row of one table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "table", content = "row", rename_all = "snake_case")]
pub enum Event {
    Sends(SendEvent),
    Statuses(StatusEvent),
    Inbound(InboundEvent),
    Clicks(ClickEvent),
    Orders(OrderEvent),
    Carts(CartEvent),
    Cases(CaseEvent),
    Consent(ConsentEvent),
    Assignments(AssignmentEvent),
    SendSkips(SendSkipEvent),
}

macro_rules! each_event {
    ($e:expr, $v:ident => $body:expr) => {
        match $e {
            Event::Sends($v) => $body,
            Event::Statuses($v) => $body,
            Event::Inbound($v) => $body,
            Event::Clicks($v) => $body,
            Event::Orders($v) => $body,
            Event::Carts($v) => $body,
            Event::Cases($v) => $body,
            Event::Consent($v) => $body,
            Event::Assignments($v) => $body,
            Event::SendSkips($v) => $body,
        }
    };
}

macro_rules! batch_of {
    ($rows:expr, $variant:ident, $ty:ty) => {{
        let rows: Vec<&$ty> = $rows
            .iter()
            .filter_map(|e| match *e {
                Event::$variant(r) => Some(r),
                _ => None,
            })
            .collect();
        <$ty>::to_batch(&rows)
    }};
}

impl Event {
    /// The table the event belongs to.
    pub fn table(&self) -> Table {
        match self {
            Event::Sends(_) => Table::Sends,
            Event::Statuses(_) => Table::Statuses,
            Event::Inbound(_) => Table::Inbound,
            Event::Clicks(_) => Table::Clicks,
            Event::Orders(_) => Table::Orders,
            Event::Carts(_) => Table::Carts,
            Event::Cases(_) => Table::Cases,
            Event::Consent(_) => Table::Consent,
            Event::Assignments(_) => Table::Assignments,
            Event::SendSkips(_) => Table::SendSkips,
        }
    }

    /// The event's time (its partition is the UTC date of this).
    pub fn ts(&self) -> Ts {
        each_event!(self, r => r.ts)
    }

    /// When chatlake accepted it.
    pub fn received_at(&self) -> Ts {
        each_event!(self, r => r.received_at)
    }

    /// Builds one batch of `table` from the events of that table in `rows` (events of
    /// other tables are skipped).
    pub fn to_batch(table: Table, rows: &[&Event]) -> Result<RecordBatch, Error> {
        match table {
            Table::Sends => batch_of!(rows, Sends, SendEvent),
            Table::Statuses => batch_of!(rows, Statuses, StatusEvent),
            Table::Inbound => batch_of!(rows, Inbound, InboundEvent),
            Table::Clicks => batch_of!(rows, Clicks, ClickEvent),
            Table::Orders => batch_of!(rows, Orders, OrderEvent),
            Table::Carts => batch_of!(rows, Carts, CartEvent),
            Table::Cases => batch_of!(rows, Cases, CaseEvent),
            Table::Consent => batch_of!(rows, Consent, ConsentEvent),
            Table::Assignments => batch_of!(rows, Assignments, AssignmentEvent),
            Table::SendSkips => batch_of!(rows, SendSkips, SendSkipEvent),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMicrosecondType;

    fn status(id: &str, code: Option<i64>) -> Event {
        Event::Statuses(StatusEvent {
            message_id: id.into(),
            status: "failed".into(),
            ts: Ts(1_700_000_000_000_000),
            phone_hash: "h".into(),
            conversation_id: None,
            conversation_origin: None,
            pricing_category: None,
            pricing_model: None,
            pricing_type: None,
            billable: Some(false),
            error_code: code,
            error_title: None,
            recipient_type: None,
            biz_opaque_callback_data: None,
            received_at: Ts(1_700_000_000_500_000),
        })
    }

    #[test]
    fn every_table_has_received_at_ts_and_a_unique_name() {
        let mut names = std::collections::HashSet::new();
        for t in Table::ALL {
            let s = t.schema();
            assert!(names.insert(t.name()));
            assert_eq!(Table::from_name(t.name()), Some(t));
            let received = s.field_with_name("received_at").expect("received_at");
            assert_eq!(received.data_type(), &ts_type());
            assert!(s.field_with_name("ts").is_ok(), "{} has ts", t.name());
            assert!(
                s.field_with_name("phone_hash").is_ok(),
                "{} has phone_hash",
                t.name()
            );
        }
        assert_eq!(Table::from_name("nope"), None);
    }

    #[test]
    fn rows_become_a_batch_with_nulls() {
        let rows = [status("a", Some(131050)), status("b", None)];
        let refs: Vec<&Event> = rows.iter().collect();
        let b = Event::to_batch(Table::Statuses, &refs).expect("batch");
        assert_eq!(b.num_rows(), 2);
        let codes = b
            .column_by_name("error_code")
            .expect("col")
            .as_primitive::<arrow::datatypes::Int64Type>();
        assert_eq!(codes.value(0), 131050);
        assert!(codes.is_null(1));
        let ts = b
            .column_by_name("ts")
            .expect("ts")
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(1), 1_700_000_000_000_000);
    }

    #[test]
    fn events_round_trip_through_json() {
        let e = status("x", Some(1));
        let s = serde_json::to_string(&e).expect("ser");
        let back: Event = serde_json::from_str(&s).expect("de");
        assert_eq!(back, e);
        assert_eq!(back.table(), Table::Statuses);
    }
}
