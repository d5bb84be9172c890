//! The DonationAlerts poller: which streamer to poll when ([`schedule`]), under the
//! app-wide budget that every instance shares.

pub mod schedule;
