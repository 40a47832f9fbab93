//! Email: building messages and delivering them over SMTP.

mod message;
mod smtp;
pub mod tls;

pub use message::{
    fit_report, report_html, report_message, report_message_id, FittedReport, ReportParts,
};
pub use smtp::{
    deliver, send_deadline, Delivered, DeliveryError, DeliveryErrorKind, Envelope, MessageBuilder,
    Session,
};
