//! Email: building the report message and sending it over SMTP.

mod message;
mod smtp;
pub mod tls;

pub use message::{report_message, report_message_id};
pub use smtp::{send, DeliveryError, DeliveryErrorKind};
