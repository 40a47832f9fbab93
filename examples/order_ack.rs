//! An automatic email from an application: an order acknowledgment sent
//! through the `[smtp]` settings of `AXIS.INI` and crashmail's outbox.
//!
//! ```sh
//! cargo run --example order_ack -- customer@example.com 1042
//! ```
//!
//! It prints what happened: delivered, queued for a later try, or refused.

use crashmail::outgoing::{Email, Mailer, SendOutcome};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let customer = args.next().unwrap_or_else(|| "customer@example.com".into());
    let order = args.next().unwrap_or_else(|| "1042".into());

    let mailer = Mailer::from_axis_ini(None)?;
    let email = Email::new(
        format!("Your order {order} has been received"),
        format!(
            "Hello,\n\nthank you for your order {order}. We have received it and will let you know when it ships.\n\nKind regards,\nThe order desk\n"
        ),
    )
    .to(customer)
    .html(format!(
        "<p>Hello,</p><p>thank you for your order <b>{order}</b>. We have received it and will let you know when it ships.</p><p>Kind regards,<br>The order desk</p>"
    ));

    match mailer.send_now(&email)? {
        SendOutcome::Delivered { id } => println!("delivered (outbox id {id})"),
        SendOutcome::Queued { id, reason } => {
            println!("queued for a later try (outbox id {id}): {reason}")
        }
        SendOutcome::Refused { id, reason } => {
            println!("refused by the server (outbox id {id}): {reason}")
        }
    }
    Ok(())
}
