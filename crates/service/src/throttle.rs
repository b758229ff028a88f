//! Throttling of failed authentication, per client id and per address, bounded in memory.
//!
//! A client secret is checked with argon2, which is slow on purpose, so wrong secrets sent in
//! bulk are a way to burn the server's CPU. Each client id and each address (an IPv4 address,
//! or the /64 an IPv6 address belongs to) keeps a tally of its recent failures; past the limit
//! it is blocked for a while, the block doubling each time it is earned again, up to a cap.
//! A blocked attempt is refused before any argon2 work is done. Attempts for a client id or
//! from an address that failed recently (suspect ones) also share one budget of checks a
//! second, so that a flood spread over many addresses and client ids, each under its own
//! limit, still gets few argon2 checks; clean attempts and a client's trusted addresses do
//! not draw on it.
//!
//! Trade-off: anyone who knows a client id can get that client id blocked. The block is
//! bounded (`longest_block`), a success clears the client id's tally, the addresses a client
//! last authenticated from keep being admitted while its client id is blocked, and the tokens
//! the client already holds keep working throughout.
//!
//! Memory: at most `remembered` tallies. When the table is full, tallies that no longer
//! matter are forgotten first, then the least recently seen unblocked ones, then the blocked
//! ones whose block ends soonest, so random client ids or addresses cannot grow it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Limits on failed authentication and on client-secret checks, with production defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthLimits {
    /// Failed client-secret checks per client id within `window` before the id is blocked.
    pub failures_per_client: u32,
    /// Failed authentications (client secrets, operator keys) per address within `window`
    /// before the address is blocked.
    pub failures_per_address: u32,
    /// The window failures are counted in.
    pub window: Duration,
    /// The first block; each further block earned within `longest_block` of the last one
    /// lasts twice as long, up to `longest_block`.
    pub first_block: Duration,
    pub longest_block: Duration,
    /// Checks a second, all together, for attempts whose client id or address failed within
    /// the window or was blocked within `longest_block` (not from an address the client id
    /// trusts); beyond, 429 for a second.
    pub suspect_checks_per_second: u32,
    /// How many client ids and addresses are remembered at most.
    pub remembered: usize,
    /// Client-secret checks (argon2) run at once, on their own threads.
    pub secret_checks_at_once: usize,
    /// Client-secret checks that may wait for a free thread; beyond, the answer is "busy".
    pub secret_checks_waiting: usize,
}

impl Default for AuthLimits {
    fn default() -> AuthLimits {
        AuthLimits {
            failures_per_client: 5,
            failures_per_address: 20,
            window: Duration::from_secs(60),
            first_block: Duration::from_secs(60),
            longest_block: Duration::from_secs(15 * 60),
            suspect_checks_per_second: 5,
            remembered: 20_000,
            secret_checks_at_once: 1,
            secret_checks_waiting: 8,
        }
    }
}

/// Where an attempt comes from: an IPv4 address, or an IPv6 /64 (what one subscriber holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AddressBlock(IpAddr);

impl AddressBlock {
    pub fn of(address: IpAddr) -> AddressBlock {
        match address {
            IpAddr::V4(v4) => AddressBlock(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => AddressBlock(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !u128::from(u64::MAX);
                    AddressBlock(IpAddr::V6(prefix.into()))
                }
            },
        }
    }
}

/// Which kind of credential an address failed with; each kind is tallied on its own, so a
/// flood of wrong client secrets does not lock operators out and the reverse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Credential {
    ClientSecret,
    OperatorKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Tallied {
    ClientId(Box<str>),
    Address(Credential, AddressBlock),
}

/// How many addresses a client id remembers as its own.
const TRUSTED_ADDRESSES: usize = 4;

#[derive(Debug, Clone)]
struct Tally {
    /// Failures in the window that started at `window_start`.
    failures: u32,
    window_start: Instant,
    /// Attempts admitted and not yet settled; they count against the limit.
    in_flight: u32,
    /// Blocks earned in a row (for the doubling).
    blocks_in_a_row: u32,
    blocked_until: Option<Instant>,
    last_seen: Instant,
    /// Client ids only: where this client last authenticated successfully.
    trusted: Vec<AddressBlock>,
}

impl Tally {
    fn new(now: Instant) -> Tally {
        Tally {
            failures: 0,
            window_start: now,
            in_flight: 0,
            blocks_in_a_row: 0,
            blocked_until: None,
            last_seen: now,
            trusted: Vec::new(),
        }
    }

    fn failures_now(&self, now: Instant, limits: &AuthLimits) -> u32 {
        if now.saturating_duration_since(self.window_start) >= limits.window {
            0
        } else {
            self.failures
        }
    }

    /// How long this tally must wait before another attempt, if it must.
    fn wait(&self, now: Instant, limit: u32, limits: &AuthLimits) -> Option<Duration> {
        if let Some(until) = self.blocked_until.filter(|until| *until > now) {
            return Some(until.saturating_duration_since(now));
        }
        // Not blocked, but as many attempts are failing or in flight as the limit allows:
        // the caller tries again shortly.
        (self.failures_now(now, limits).saturating_add(self.in_flight) >= limit).then_some(Duration::ZERO)
    }

    fn fail(&mut self, now: Instant, limit: u32, limits: &AuthLimits) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_seen = now;
        self.failures = self.failures_now(now, limits).saturating_add(1);
        if self.failures == 1 {
            self.window_start = now;
        }
        if self.failures >= limit {
            // Blocks earned within `longest_block` of the end of the last one are in a row.
            let in_a_row = self
                .blocked_until
                .is_some_and(|until| now.saturating_duration_since(until) <= limits.longest_block);
            self.blocks_in_a_row = if in_a_row { self.blocks_in_a_row.saturating_add(1) } else { 1 };
            let doublings = self.blocks_in_a_row.saturating_sub(1).min(20);
            let block = limits.first_block.saturating_mul(1 << doublings).min(limits.longest_block);
            // A block still running is never shortened.
            let until = now + block;
            self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
            self.failures = 0;
        }
    }

    /// Whether forgetting this tally changes nothing any more.
    fn forgettable(&self, now: Instant, limits: &AuthLimits) -> bool {
        let quiet_for = now.saturating_duration_since(self.last_seen);
        let block_over_for = self.blocked_until.map_or(Duration::MAX, |b| now.saturating_duration_since(b));
        let remember = if self.trusted.is_empty() { limits.longest_block } else { TRUSTED_FOR };
        self.in_flight == 0
            && block_over_for > limits.longest_block
            && quiet_for > remember.max(limits.window)
    }
}

/// How long a client id remembers the addresses it succeeded from when nothing else happens.
const TRUSTED_FOR: Duration = Duration::from_secs(24 * 3600);

/// An attempt refused before any work: wait this long (at least a second) and try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyAttempts {
    pub retry_after: Duration,
}

impl TooManyAttempts {
    fn after(wait: Duration) -> TooManyAttempts {
        TooManyAttempts { retry_after: wait.max(Duration::from_secs(1)) }
    }

    /// Whole seconds, rounded up, as `Retry-After` carries them.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        if self.retry_after.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        }
    }
}

/// The tallies of failed authentication.
#[derive(Debug)]
pub struct FailedAuthentication {
    limits: AuthLimits,
    tallies: Mutex<HashMap<Tallied, Tally>>,
    /// The checks suspect attempts may still have now (a token bucket), and when it was filled.
    suspect_budget: Mutex<(f64, Option<Instant>)>,
}

/// A client-secret check admitted by [`FailedAuthentication::admit_client`]; settle it with
/// its outcome. Dropped unsettled (an error before the secret was checked), it counts for
/// nothing.
#[derive(Debug)]
#[must_use = "settle the attempt with its outcome"]
pub struct ClientAttempt<'a> {
    tallies: &'a FailedAuthentication,
    client_id: Box<str>,
    from: Option<AddressBlock>,
    settled: bool,
}

impl ClientAttempt<'_> {
    /// The secret was wrong.
    pub fn failed(mut self, now: Instant) {
        self.settled = true;
        self.tallies.settle(&self.client_id, self.from, Some(false), now);
    }

    /// The secret was right: the client id's tally is cleared and `from` is remembered.
    pub fn succeeded(mut self, now: Instant) {
        self.settled = true;
        self.tallies.settle(&self.client_id, self.from, Some(true), now);
    }
}

impl Drop for ClientAttempt<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.tallies.settle(&self.client_id, self.from, None, Instant::now());
        }
    }
}

impl FailedAuthentication {
    pub fn new(limits: AuthLimits) -> FailedAuthentication {
        FailedAuthentication {
            limits,
            tallies: Mutex::new(HashMap::new()),
            suspect_budget: Mutex::new((0.0, None)),
        }
    }

    /// Takes one check from the suspect budget, which refills at `suspect_checks_per_second`
    /// up to one second's worth; false when it is empty.
    fn take_suspect_check(&self, now: Instant) -> bool {
        let rate = f64::from(self.limits.suspect_checks_per_second.max(1));
        let Ok(mut budget) = self.suspect_budget.lock() else { return true };
        let (tokens, filled) = *budget;
        let tokens = match filled {
            Some(at) => (tokens + now.saturating_duration_since(at).as_secs_f64() * rate).min(rate),
            None => rate,
        };
        let (left, taken) = if tokens >= 1.0 { (tokens - 1.0, true) } else { (tokens, false) };
        // Time never goes back for the bucket, even if callers' instants arrive out of order.
        let at = filled.map_or(now, |f| f.max(now));
        *budget = (left, Some(at));
        taken
    }

    pub fn limits(&self) -> &AuthLimits {
        &self.limits
    }

    /// How many tallies are held now (for tests of the memory bound).
    pub fn remembered(&self) -> usize {
        self.tallies.lock().map_or(0, |t| t.len())
    }

    fn address_limit(&self) -> u32 {
        self.limits.failures_per_address.max(1)
    }

    fn client_limit(&self) -> u32 {
        self.limits.failures_per_client.max(1)
    }

    /// Refuses an attempt with `credential` from a blocked address. Nothing is counted.
    pub fn check_address(
        &self,
        credential: Credential,
        from: Option<AddressBlock>,
        now: Instant,
    ) -> Result<(), TooManyAttempts> {
        let Some(from) = from else { return Ok(()) };
        let Ok(tallies) = self.tallies.lock() else { return Ok(()) };
        match tallies.get(&Tallied::Address(credential, from)) {
            Some(tally) => match tally.wait(now, self.address_limit(), &self.limits) {
                Some(wait) => Err(TooManyAttempts::after(wait)),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Counts a failure with `credential` from `from` (a wrong operator key, an unknown
    /// client id), which needed no attempt to be admitted.
    pub fn address_failed(&self, credential: Credential, from: Option<AddressBlock>, now: Instant) {
        let Some(from) = from else { return };
        let limit = self.address_limit();
        let Ok(mut tallies) = self.tallies.lock() else { return };
        let tally = self.tally(&mut tallies, Tallied::Address(credential, from), now);
        tally.in_flight = tally.in_flight.saturating_add(1);
        tally.fail(now, limit, &self.limits);
    }

    /// Why an attempt for `client_id` from `from` would be refused now, if it would.
    fn client_refusal(
        &self,
        tallies: &HashMap<Tallied, Tally>,
        client_id: &str,
        from: Option<AddressBlock>,
        now: Instant,
    ) -> Option<TooManyAttempts> {
        let address = from.and_then(|a| tallies.get(&Tallied::Address(Credential::ClientSecret, a)));
        if let Some(wait) = address.and_then(|t| t.wait(now, self.address_limit(), &self.limits)) {
            return Some(TooManyAttempts::after(wait));
        }
        let client = tallies.get(&Tallied::ClientId(client_id.into()))?;
        let trusted = from.is_some_and(|a| client.trusted.contains(&a));
        client.wait(now, self.client_limit(), &self.limits).filter(|_| !trusted).map(TooManyAttempts::after)
    }

    /// Refuses, before any work, a client-secret attempt that [`Self::admit_client`] would
    /// refuse. Nothing is counted.
    pub fn check_client(
        &self,
        client_id: &str,
        from: Option<AddressBlock>,
        now: Instant,
    ) -> Result<(), TooManyAttempts> {
        let Ok(tallies) = self.tallies.lock() else { return Ok(()) };
        self.client_refusal(&tallies, client_id, from, now).map_or(Ok(()), Err)
    }

    /// Admits one client-secret check for `client_id` from `from`, or says how long to wait.
    /// While the client id is blocked, an address it last succeeded from is still admitted.
    pub fn admit_client(
        &self,
        client_id: &str,
        from: Option<AddressBlock>,
        now: Instant,
    ) -> Result<ClientAttempt<'_>, TooManyAttempts> {
        let Ok(mut tallies) = self.tallies.lock() else {
            // A poisoned lock means a bug elsewhere; refusing would lock everyone out.
            return Ok(ClientAttempt { tallies: self, client_id: client_id.into(), from, settled: true });
        };
        if let Some(refused) = self.client_refusal(&tallies, client_id, from, now) {
            return Err(refused);
        }
        let client_tally = tallies.get(&Tallied::ClientId(client_id.into()));
        let trusted = from.is_some_and(|a| client_tally.is_some_and(|t| t.trusted.contains(&a)));
        let failed_recently = |tally: Option<&Tally>| {
            tally.is_some_and(|t| {
                t.failures_now(now, &self.limits) > 0
                    || t.blocked_until.is_some_and(|until| {
                        now.saturating_duration_since(until) <= self.limits.longest_block
                    })
            })
        };
        let address_tally = from.and_then(|a| tallies.get(&Tallied::Address(Credential::ClientSecret, a)));
        let suspect = !trusted && (failed_recently(client_tally) || failed_recently(address_tally));
        if suspect && !self.take_suspect_check(now) {
            return Err(TooManyAttempts::after(Duration::from_secs(1)));
        }
        let client = self.tally(&mut tallies, Tallied::ClientId(client_id.into()), now);
        client.in_flight = client.in_flight.saturating_add(1);
        client.last_seen = now;
        if let Some(from) = from {
            let address = self.tally(&mut tallies, Tallied::Address(Credential::ClientSecret, from), now);
            address.in_flight = address.in_flight.saturating_add(1);
            address.last_seen = now;
        }
        Ok(ClientAttempt { tallies: self, client_id: client_id.into(), from, settled: false })
    }

    /// `outcome`: `Some(true)` succeeded, `Some(false)` failed, `None` abandoned.
    fn settle(&self, client_id: &str, from: Option<AddressBlock>, outcome: Option<bool>, now: Instant) {
        let (client_limit, address_limit) = (self.client_limit(), self.address_limit());
        let Ok(mut tallies) = self.tallies.lock() else { return };
        let client = self.tally(&mut tallies, Tallied::ClientId(client_id.into()), now);
        match outcome {
            Some(false) => client.fail(now, client_limit, &self.limits),
            Some(true) => {
                let trusted = std::mem::take(&mut client.trusted);
                *client = Tally { trusted, in_flight: client.in_flight.saturating_sub(1), ..Tally::new(now) };
                if let Some(from) = from {
                    client.trusted.retain(|a| *a != from);
                    client.trusted.insert(0, from);
                    client.trusted.truncate(TRUSTED_ADDRESSES);
                }
            }
            None => client.in_flight = client.in_flight.saturating_sub(1),
        }
        if let Some(from) = from {
            let address = self.tally(&mut tallies, Tallied::Address(Credential::ClientSecret, from), now);
            match outcome {
                // A success from an address does not clear its failures: one valid secret
                // must not buy unlimited guesses at others.
                Some(false) => address.fail(now, address_limit, &self.limits),
                Some(true) | None => address.in_flight = address.in_flight.saturating_sub(1),
            }
        }
    }

    /// The tally for `key`, made room for and created if needed.
    fn tally<'t>(
        &self,
        tallies: &'t mut HashMap<Tallied, Tally>,
        key: Tallied,
        now: Instant,
    ) -> &'t mut Tally {
        if !tallies.contains_key(&key) && tallies.len() >= self.limits.remembered.max(1) {
            self.make_room(tallies, now);
        }
        tallies.entry(key).or_insert_with(|| Tally::new(now))
    }

    /// Forgets what no longer matters; if that is not enough, forgets down to half the
    /// capacity: unblocked tallies least recently seen first, then blocked ones ending soonest.
    fn make_room(&self, tallies: &mut HashMap<Tallied, Tally>, now: Instant) {
        let capacity = self.limits.remembered.max(1);
        tallies.retain(|_, tally| !tally.forgettable(now, &self.limits));
        if tallies.len() < capacity {
            return;
        }
        let keep = capacity / 2;
        let mut order: Vec<(bool, Instant, Tallied)> = tallies
            .iter()
            .map(|(key, tally)| match tally.blocked_until.filter(|until| *until > now) {
                Some(until) => (true, until, key.clone()),
                None => (false, tally.last_seen, key.clone()),
            })
            .collect();
        order.sort_unstable_by_key(|(blocked, at, _)| (*blocked, *at));
        for (_, _, key) in order.into_iter().take(tallies.len().saturating_sub(keep)) {
            tallies.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small table; the shared budget out of the way unless a test is about it.
    fn limits() -> AuthLimits {
        AuthLimits { remembered: 64, suspect_checks_per_second: 1_000, ..AuthLimits::default() }
    }

    fn address(last: u8) -> Option<AddressBlock> {
        Some(AddressBlock::of(IpAddr::from([10, 0, 0, last])))
    }

    fn fail(tallies: &FailedAuthentication, client: &str, from: Option<AddressBlock>, now: Instant) {
        if let Ok(attempt) = tallies.admit_client(client, from, now) {
            attempt.failed(now);
        }
    }

    #[test]
    fn a_client_id_is_blocked_after_five_failures_for_a_minute() {
        let tallies = FailedAuthentication::new(limits());
        let t0 = Instant::now();
        for i in 0..5 {
            let at = t0 + Duration::from_secs(i);
            let attempt = tallies.admit_client("cid_a", address(i as u8), at);
            assert!(attempt.is_ok(), "attempt {i} refused");
            if let Ok(attempt) = attempt {
                attempt.failed(at);
            }
        }
        // Blocked for a minute from the fifth failure (at t0 + 4 s).
        let refused = tallies.admit_client("cid_a", address(9), t0 + Duration::from_secs(5)).err();
        assert_eq!(refused.map(|r| r.retry_after_secs()), Some(59));
        // Another client id is not affected.
        assert!(tallies.admit_client("cid_b", address(9), t0 + Duration::from_secs(5)).is_ok());
        // After the block, attempts are admitted again.
        assert!(tallies.admit_client("cid_a", address(9), t0 + Duration::from_secs(64)).is_ok());
    }

    #[test]
    fn blocks_earned_in_a_row_double_up_to_the_cap() {
        let tallies = FailedAuthentication::new(limits());
        let mut now = Instant::now();
        let mut blocks = Vec::new();
        for _ in 0..8 {
            for _ in 0..5 {
                fail(&tallies, "cid_a", None, now);
            }
            let wait = tallies.admit_client("cid_a", None, now).err().map(|r| r.retry_after_secs());
            blocks.push(wait.unwrap_or(0));
            now += Duration::from_secs(wait.unwrap_or(0));
        }
        assert_eq!(blocks, [60, 120, 240, 480, 900, 900, 900, 900]);
        // Quiet for longer than the longest block: the next block is a first one again.
        now += Duration::from_secs(901);
        for _ in 0..5 {
            fail(&tallies, "cid_a", None, now);
        }
        assert_eq!(tallies.admit_client("cid_a", None, now).err().map(|r| r.retry_after_secs()), Some(60));
    }

    #[test]
    fn a_success_clears_the_client_id_and_its_address_stays_admitted_while_blocked() {
        let tallies = FailedAuthentication::new(limits());
        let now = Instant::now();
        let real = address(1);
        for _ in 0..4 {
            fail(&tallies, "cid_a", real, now);
        }
        if let Ok(attempt) = tallies.admit_client("cid_a", real, now) {
            attempt.succeeded(now);
        }
        // The four failures are forgotten: four more do not block.
        for _ in 0..4 {
            fail(&tallies, "cid_a", address(2), now);
        }
        assert!(tallies.admit_client("cid_a", address(3), now).is_ok());
        // An attacker elsewhere gets the client id blocked...
        fail(&tallies, "cid_a", address(2), now);
        assert!(tallies.admit_client("cid_a", address(3), now).is_err());
        // ...but the address the real client succeeded from is still admitted.
        assert!(tallies.admit_client("cid_a", real, now).is_ok());
    }

    #[test]
    fn an_address_is_blocked_after_twenty_failures_whatever_the_client_ids() {
        let tallies = FailedAuthentication::new(limits());
        let now = Instant::now();
        for i in 0..19 {
            fail(&tallies, &format!("cid_{i}"), address(7), now);
        }
        tallies.address_failed(Credential::ClientSecret, address(7), now);
        assert!(tallies.admit_client("cid_new", address(7), now).is_err());
        assert!(tallies.check_address(Credential::ClientSecret, address(7), now).is_err());
        // A success from that address does not unblock it; other addresses are unaffected.
        assert!(tallies.admit_client("cid_new", address(8), now).is_ok());
        // Operator keys are tallied apart.
        assert!(tallies.check_address(Credential::OperatorKey, address(7), now).is_ok());
    }

    #[test]
    fn attempts_in_flight_count_against_the_limit() {
        let tallies = FailedAuthentication::new(limits());
        let now = Instant::now();
        let held: Vec<_> = (0..5).filter_map(|_| tallies.admit_client("cid_a", None, now).ok()).collect();
        assert_eq!(held.len(), 5);
        let refused = tallies.admit_client("cid_a", None, now).err();
        assert_eq!(refused.map(|r| r.retry_after_secs()), Some(1));
        // Abandoned attempts (dropped unsettled) count for nothing.
        drop(held);
        assert!(tallies.admit_client("cid_a", None, now).is_ok());
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_share_a_tally() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap_or(IpAddr::from([0; 16]));
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap_or(IpAddr::from([0; 16]));
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap_or(IpAddr::from([0; 16]));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap_or(IpAddr::from([0; 16]));
        assert_eq!(AddressBlock::of(a), AddressBlock::of(b));
        assert_ne!(AddressBlock::of(a), AddressBlock::of(c));
        assert_eq!(Some(AddressBlock::of(mapped)), address(1));
    }

    #[test]
    fn suspect_attempts_share_a_budget_that_clean_and_trusted_ones_do_not_draw_on() {
        let limits = AuthLimits { suspect_checks_per_second: 5, remembered: 1_000, ..limits() };
        let tallies = FailedAuthentication::new(limits);
        let now = Instant::now();
        if let Ok(attempt) = tallies.admit_client("cid_0", address(1), now) {
            attempt.succeeded(now);
        }
        // Forty client ids fail once each, from forty addresses: clean attempts, all checked.
        for i in 1..=40u8 {
            let attempt = tallies.admit_client(&format!("cid_{i}"), address(i + 1), now);
            assert!(attempt.is_ok(), "first attempt for cid_{i} refused");
            if let Ok(attempt) = attempt {
                attempt.failed(now);
            }
        }
        // Their next attempts, from fresh addresses, are suspect: five checks this second.
        let mut checked = 0;
        for i in 1..=40u8 {
            match tallies.admit_client(&format!("cid_{i}"), address(i + 100), now) {
                Ok(attempt) => {
                    attempt.failed(now);
                    checked += 1;
                }
                Err(refused) => assert_eq!(refused.retry_after_secs(), 1),
            }
        }
        assert_eq!(checked, 5);
        // A clean client id from a clean address does not draw on the budget...
        assert!(tallies.admit_client("cid_fresh", address(200), now).is_ok());
        // ...nor does the real client from the address it succeeded from, once attacked.
        fail(&tallies, "cid_0", address(201), now);
        assert!(tallies.admit_client("cid_0", address(202), now).is_err());
        assert!(tallies.admit_client("cid_0", address(1), now).is_ok());
        // A second later the budget has refilled.
        assert!(tallies.admit_client("cid_1", address(150), now + Duration::from_secs(1)).is_ok());
    }

    #[derive(Debug, Clone)]
    enum Step {
        Fail { client: u16, from: u16 },
        Succeed { client: u16, from: u16 },
        OperatorFail { from: u16 },
        Wait { secs: u16 },
    }

    fn step() -> impl Strategy<Value = Step> {
        // Client ids and addresses drawn from a space larger than the table, so it must evict.
        prop_oneof![
            5 => (0u16..400, 0u16..400).prop_map(|(client, from)| Step::Fail { client, from }),
            1 => (0u16..400, 0u16..400).prop_map(|(client, from)| Step::Succeed { client, from }),
            1 => (0u16..400).prop_map(|from| Step::OperatorFail { from }),
            1 => (0u16..1000).prop_map(|secs| Step::Wait { secs }),
        ]
    }

    fn from(n: u16) -> Option<AddressBlock> {
        let [hi, lo] = n.to_be_bytes();
        Some(AddressBlock::of(IpAddr::from([10, 1, hi, lo])))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Over any sequence: the table never outgrows its bound, every refusal asks for a wait
        /// of 1 s to `longest_block`, and a client id that was quiet for `longest_block` plus
        /// the window is admitted again (nobody is locked out for ever).
        #[test]
        fn bounded_honest_and_never_locked_out_for_ever(steps in proptest::collection::vec(step(), 1..400)) {
            let limits = AuthLimits { suspect_checks_per_second: 5, ..limits() };
            let tallies = FailedAuthentication::new(limits.clone());
            let mut now = Instant::now();
            for step in steps {
                match step {
                    Step::Fail { client, from: f } | Step::Succeed { client, from: f } => {
                        let succeeded = matches!(step, Step::Succeed { .. });
                        match tallies.admit_client(&format!("cid_{client}"), from(f), now) {
                            Ok(attempt) if succeeded => attempt.succeeded(now),
                            Ok(attempt) => attempt.failed(now),
                            Err(refused) => {
                                prop_assert!(refused.retry_after >= Duration::from_secs(1));
                                prop_assert!(refused.retry_after <= limits.longest_block);
                            }
                        }
                    }
                    Step::OperatorFail { from: f } => tallies.address_failed(Credential::OperatorKey, from(f), now),
                    Step::Wait { secs } => now += Duration::from_secs(u64::from(secs)),
                }
                prop_assert!(tallies.remembered() <= limits.remembered);
            }
            let later = now + limits.longest_block + limits.window;
            prop_assert!(tallies.admit_client("cid_1", from(1), later).is_ok());
        }

        /// A client id never has many more failed checks admitted than its limit: failures are
        /// counted in fixed windows and a block lasts at least a window, so any stretch of one
        /// window holds at most `2 × failures_per_client − 1` of them.
        #[test]
        fn admitted_failures_per_client_id_stay_within_the_limit(
            gaps in proptest::collection::vec(0u64..30, 1..300),
        ) {
            let limits = limits();
            let tallies = FailedAuthentication::new(limits.clone());
            let start = Instant::now();
            let mut now = start;
            let mut admitted: Vec<Instant> = Vec::new();
            for (i, gap) in gaps.into_iter().enumerate() {
                now += Duration::from_secs(gap);
                let i = u16::try_from(i % 1000).unwrap_or(0);
                if let Ok(attempt) = tallies.admit_client("cid_target", from(i), now) {
                    admitted.push(now);
                    attempt.failed(now);
                }
            }
            let most = 2 * limits.failures_per_client as usize - 1;
            for (i, at) in admitted.iter().enumerate() {
                let within = admitted
                    .iter()
                    .skip(i)
                    .take_while(|t| t.saturating_duration_since(*at) < limits.window)
                    .count();
                prop_assert!(within <= most, "{within} failures admitted within one window");
            }
        }
    }
}
