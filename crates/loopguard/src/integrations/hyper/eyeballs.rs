//! Happy eyeballs (RFC 8305): the order connection attempts are made in, and the race
//! between them.

use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::Error;

/// The order to try `addresses` in: duplicates dropped, then the families alternating, IPv6
/// first (RFC 8305, section 4, with a "First Address Family Count" of one), each family in
/// the order given. An IPv4-mapped IPv6 address counts as IPv4: that is the path it takes.
pub(super) fn interleave(addresses: impl IntoIterator<Item = SocketAddr>) -> Vec<SocketAddr> {
    let mut v6 = Vec::new();
    let mut v4 = Vec::new();
    for addr in addresses {
        if v6.contains(&addr) || v4.contains(&addr) {
            continue;
        }
        if addr.ip().to_canonical().is_ipv6() {
            v6.push(addr);
        } else {
            v4.push(addr);
        }
    }
    let mut ordered = Vec::with_capacity(v6.len() + v4.len());
    let (mut v6, mut v4) = (v6.into_iter(), v4.into_iter());
    loop {
        match (v6.next(), v4.next()) {
            (None, None) => return ordered,
            (a, b) => ordered.extend(a.into_iter().chain(b)),
        }
    }
}

/// Connects to the first of `ordered` that answers. The first attempt starts at once; each
/// next one when the previous attempt failed or `delay` has passed since the last start,
/// whichever is first. The first success wins and every other attempt is dropped (closing
/// its socket). A fatal error ([`Error::is_fatal`]: the factory cannot protect sockets) ends
/// the race at once.
///
/// On failure, returns the failures in `ordered`'s order (empty when `ordered` is).
pub(super) async fn race<T, F, Fut>(
    ordered: &[SocketAddr],
    delay: Duration,
    mut connect: F,
) -> Result<T, Vec<(SocketAddr, Error)>>
where
    F: FnMut(SocketAddr) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let mut waiting = ordered.iter().copied().enumerate();
    // Each attempt under way: its place in the order, its destination, its connection.
    let mut running: Vec<(usize, SocketAddr, Pin<Box<Fut>>)> = Vec::new();
    let mut failures: Vec<(usize, SocketAddr, Error)> = Vec::new();
    let timer = tokio::time::sleep(delay);
    tokio::pin!(timer);
    let mut start_next = true;
    loop {
        if start_next {
            if let Some((place, addr)) = waiting.next() {
                running.push((place, addr, Box::pin(connect(addr))));
                timer.as_mut().reset(tokio::time::Instant::now() + delay);
            }
        }
        if running.is_empty() {
            break;
        }
        let more = waiting.len() > 0;
        let event = poll_fn(|cx| {
            for i in 0..running.len() {
                if let Poll::Ready(result) = running[i].2.as_mut().poll(cx) {
                    let (place, addr, _) = running.swap_remove(i);
                    return Poll::Ready(Some((place, addr, result)));
                }
            }
            if more && timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await;
        match event {
            Some((_, _, Ok(stream))) => return Ok(stream),
            Some((place, addr, Err(e))) => {
                tracing::debug!(destination = %addr, error = %e, "connection attempt failed");
                let fatal = e.is_fatal();
                failures.push((place, addr, e));
                if fatal {
                    break;
                }
            }
            None => {}
        }
        // Both a failure and the timer start the next attempt.
        start_next = true;
    }
    failures.sort_by_key(|(place, _, _)| *place);
    Err(failures.into_iter().map(|(_, a, e)| (a, e)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn families_alternate_ipv6_first_each_in_its_given_order() {
        let given = addrs(&[
            "198.51.100.1:443",
            "198.51.100.2:443",
            "198.51.100.3:443",
            "[2001:db8::1]:443",
            "[2001:db8::2]:443",
        ]);
        let want = addrs(&[
            "[2001:db8::1]:443",
            "198.51.100.1:443",
            "[2001:db8::2]:443",
            "198.51.100.2:443",
            "198.51.100.3:443",
        ]);
        assert_eq!(interleave(given), want);
    }

    #[test]
    fn one_family_keeps_its_order_and_duplicates_go() {
        let given = addrs(&["192.0.2.9:80", "192.0.2.1:80", "192.0.2.9:80"]);
        assert_eq!(interleave(given), addrs(&["192.0.2.9:80", "192.0.2.1:80"]));
        assert_eq!(interleave(Vec::new()), Vec::<SocketAddr>::new());
    }

    #[test]
    fn a_mapped_address_counts_as_ipv4() {
        let given = addrs(&["[::ffff:192.0.2.1]:80", "192.0.2.2:80", "[2001:db8::1]:80"]);
        let want = addrs(&["[2001:db8::1]:80", "[::ffff:192.0.2.1]:80", "192.0.2.2:80"]);
        assert_eq!(interleave(given), want);
    }

    /// What a fake attempt does.
    #[derive(Clone, Copy)]
    enum Fake {
        Succeed,
        Fail,
        /// Fails, but only after a while.
        FailLate,
        FailFatally,
        Hang,
    }

    /// Runs a race over fake attempts, returning its outcome and the destinations in the
    /// order their attempts started.
    async fn fake_race(
        plan: &[(&str, Fake)],
        delay: Duration,
    ) -> (
        Result<SocketAddr, Vec<(SocketAddr, Error)>>,
        Vec<SocketAddr>,
    ) {
        let ordered: Vec<SocketAddr> = plan.iter().map(|(a, _)| a.parse().unwrap()).collect();
        let behaviour: Vec<(SocketAddr, Fake)> = ordered
            .iter()
            .copied()
            .zip(plan.iter().map(|p| p.1))
            .collect();
        let started = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&started);
        let outcome = race(&ordered, delay, move |addr| {
            log.lock().unwrap().push(addr);
            let fake = behaviour.iter().find(|(a, _)| *a == addr).unwrap().1;
            async move {
                match fake {
                    Fake::Succeed => Ok(addr),
                    Fake::Fail => Err(Error::Io(io::ErrorKind::ConnectionRefused.into())),
                    Fake::FailLate => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Err(Error::Io(io::ErrorKind::TimedOut.into()))
                    }
                    Fake::FailFatally => Err(Error::Protection(crate::ProtectionError::new(
                        "fake",
                        io::Error::other("refused"),
                        None,
                    ))),
                    Fake::Hang => std::future::pending().await,
                }
            }
        })
        .await;
        let started = started.lock().unwrap().clone();
        (outcome, started)
    }

    /// Longer than any test may take: an attempt that waits for it shows up as a timeout.
    const FOREVER: Duration = Duration::from_secs(3600);
    const BOUND: Duration = Duration::from_secs(30);

    #[tokio::test]
    async fn a_failure_starts_the_next_attempt_without_waiting_for_the_delay() {
        let plan = [
            ("[2001:db8::1]:80", Fake::Fail),
            ("192.0.2.1:80", Fake::Fail),
            ("[2001:db8::2]:80", Fake::Succeed),
        ];
        let (outcome, started) = tokio::time::timeout(BOUND, fake_race(&plan, FOREVER))
            .await
            .expect("the race waited for the delay after a failure");
        assert_eq!(outcome.unwrap(), "[2001:db8::2]:80".parse().unwrap());
        assert_eq!(started.len(), 3);
    }

    #[tokio::test]
    async fn a_hanging_attempt_is_overtaken_after_the_delay() {
        let delay = Duration::from_millis(50);
        let plan = [
            ("[2001:db8::1]:80", Fake::Hang),
            ("192.0.2.1:80", Fake::Succeed),
            ("[2001:db8::2]:80", Fake::Succeed),
        ];
        let begun = Instant::now();
        let (outcome, started) = tokio::time::timeout(BOUND, fake_race(&plan, delay))
            .await
            .expect("the second attempt never started");
        assert!(begun.elapsed() >= delay, "{:?}", begun.elapsed());
        assert_eq!(outcome.unwrap(), "192.0.2.1:80".parse().unwrap());
        // The winner ended the race: the third address was never tried.
        assert_eq!(started, addrs(&["[2001:db8::1]:80", "192.0.2.1:80"]));
    }

    #[tokio::test]
    async fn all_failing_reports_every_failure_in_preference_order() {
        // The first fails last: the second starts after the delay and fails at once.
        let plan = [
            ("[2001:db8::1]:80", Fake::FailLate),
            ("192.0.2.1:80", Fake::Fail),
        ];
        let (outcome, started) = fake_race(&plan, Duration::from_millis(10)).await;
        let failures = outcome.unwrap_err();
        let failed: Vec<SocketAddr> = failures.iter().map(|(a, _)| *a).collect();
        assert_eq!(failed, started);
        assert_eq!(failed, addrs(&["[2001:db8::1]:80", "192.0.2.1:80"]));
        assert_eq!(
            failures[0].1.to_string(),
            io::Error::from(io::ErrorKind::TimedOut).to_string()
        );
    }

    #[tokio::test]
    async fn a_fatal_error_ends_the_race_at_once() {
        let plan = [
            ("[2001:db8::1]:80", Fake::FailFatally),
            ("192.0.2.1:80", Fake::Succeed),
        ];
        let (outcome, started) = fake_race(&plan, FOREVER).await;
        let failures = outcome.unwrap_err();
        assert_eq!(failures.len(), 1);
        assert!(failures[0].1.is_fatal());
        assert_eq!(
            started.len(),
            1,
            "nothing more may be tried after a fatal error"
        );
    }

    #[tokio::test]
    async fn no_address_is_no_attempt() {
        let (outcome, started) = fake_race(&[], FOREVER).await;
        assert!(outcome.unwrap_err().is_empty());
        assert!(started.is_empty());
    }
}
