//! A spinner on stderr for work that takes more than a second, shown only on a terminal.

use std::future::Future;
use std::io::IsTerminal as _;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How long work runs before the spinner appears, so quick work prints nothing.
const SHOW_AFTER: Duration = Duration::from_secs(1);

/// How often the spinner redraws.
const TICK: Duration = Duration::from_millis(100);

/// Runs `work`, showing `message` with a spinner on stderr if it takes longer than a second
/// and stderr is a terminal.
pub async fn with_spinner<T>(message: &str, work: impl Future<Output = T>) -> T {
    if !std::io::stderr().is_terminal() {
        return work.await;
    }
    let mut work = std::pin::pin!(work);
    if let Ok(output) = tokio::time::timeout(SHOW_AFTER, &mut work).await {
        return output;
    }

    let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        spinner.set_style(style);
    }
    spinner.set_message(message.to_owned());
    spinner.enable_steady_tick(TICK);
    let output = work.await;
    spinner.finish_and_clear();
    output
}
