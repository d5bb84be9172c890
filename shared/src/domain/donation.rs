//! A donation, one type from the provider's answer to the bus.
//!
//! Text fields are bounded when a donation is parsed ([`Donation::within_limits`]): a longer
//! donor name or message is cut (ending in "…"), a currency that is no code becomes `???`;
//! the donation itself is never refused for its fields.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::text::truncated;

/// The longest donor name recorded, in characters. DonationAlerts' donation form takes far
/// shorter names: this only stops a broken or hostile answer.
pub const MAX_DONOR_NAME_CHARS: usize = 255;
/// The longest message recorded, in characters (DonationAlerts' form takes a few hundred).
pub const MAX_MESSAGE_CHARS: usize = 2_000;
/// The currency recorded for a donation whose currency is not a currency code.
pub const UNKNOWN_CURRENCY: &str = "???";

/// A donation: parsed from the provider's answer, bounded there ([`Donation::within_limits`]),
/// recorded by the store and carried on the bus as the event's `donation` object (the Node
/// app's field names: `id`, `username`, `message`, `amount`, `currency`, `createdAt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Donation {
    /// DonationAlerts' id of the donation (unique per DonationAlerts account).
    pub id: i64,
    /// `None` for anonymous donors.
    #[serde(rename = "username")]
    pub donor_name: Option<String>,
    pub message: String,
    pub amount: serde_json::Number,
    pub currency: String,
    /// RFC 3339 UTC.
    pub created_at: String,
}

impl Donation {
    /// This donation as it is recorded: a donor name longer than [`MAX_DONOR_NAME_CHARS`]
    /// or a message longer than [`MAX_MESSAGE_CHARS`] cut to the limit (ending in "…"), the
    /// currency as its upper-case code or, when it is none, [`UNKNOWN_CURRENCY`]. Each change
    /// is logged as a warning naming the donation and the field, never the text. A donation
    /// is never refused for its fields: losing one is worse than showing it cut or with an
    /// unknown currency.
    pub fn within_limits(mut self) -> Self {
        let id = self.id;
        if let Some(name) = &self.donor_name
            && let Cow::Owned(cut) = truncated(name, MAX_DONOR_NAME_CHARS)
        {
            tracing::warn!(
                donation = id,
                chars = name.chars().count(),
                "a donor name longer than {MAX_DONOR_NAME_CHARS} characters is recorded cut"
            );
            self.donor_name = Some(cut);
        }
        if let Cow::Owned(cut) = truncated(&self.message, MAX_MESSAGE_CHARS) {
            tracing::warn!(
                donation = id,
                chars = self.message.chars().count(),
                "a donation message longer than {MAX_MESSAGE_CHARS} characters is recorded cut"
            );
            self.message = cut;
        }
        if self.currency != UNKNOWN_CURRENCY {
            match currency_code(&self.currency) {
                Some(code) => self.currency = code,
                None => {
                    tracing::warn!(
                        donation = id,
                        bytes = self.currency.len(),
                        "a donation's currency is no currency code; recorded as {UNKNOWN_CURRENCY}"
                    );
                    self.currency = UNKNOWN_CURRENCY.to_owned();
                }
            }
        }
        self
    }
}

/// `text` as a currency code: 3 to 5 ASCII letters (ISO 4217 codes have 3; some payment
/// systems use longer ones), surrounding spaces dropped, in upper case.
pub(crate) fn currency_code(text: &str) -> Option<String> {
    let code = text.trim();
    ((3..=5).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn donation(name: Option<&str>, message: &str, currency: &str) -> Donation {
        Donation {
            id: 1,
            donor_name: name.map(str::to_owned),
            message: message.to_owned(),
            amount: serde_json::Number::from(100),
            currency: currency.to_owned(),
            created_at: "2026-01-01T00:00:00Z".to_owned(),
        }
    }

    #[test]
    fn fields_within_the_limits_are_recorded_as_they_are() {
        let name = "n".repeat(MAX_DONOR_NAME_CHARS);
        let message = "ё".repeat(MAX_MESSAGE_CHARS);
        let kept = donation(Some(&name), &message, "RUB").within_limits();
        assert_eq!(kept, donation(Some(&name), &message, "RUB"));
        assert_eq!(
            donation(None, "", "EUR").within_limits(),
            donation(None, "", "EUR")
        );
    }

    #[test]
    fn longer_fields_are_cut_to_the_limit_and_marked() {
        let name = "ж".repeat(MAX_DONOR_NAME_CHARS + 1);
        let message = "m".repeat(MAX_MESSAGE_CHARS * 10);
        let cut = donation(Some(&name), &message, "RUB").within_limits();
        let cut_name = cut.donor_name.unwrap();
        assert_eq!(cut_name.chars().count(), MAX_DONOR_NAME_CHARS);
        assert!(cut_name.ends_with("жж…"));
        assert_eq!(cut.message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(cut.message.ends_with("mm…"));
        assert_eq!(cut.currency, "RUB");
    }

    #[test]
    fn a_currency_is_a_short_letter_code_in_upper_case_or_marked_unknown() {
        for (sent, recorded) in [
            ("RUB", "RUB"),
            ("usd", "USD"),
            (" EUR ", "EUR"),
            ("USDT", "USDT"),
            ("", UNKNOWN_CURRENCY),
            ("RU", UNKNOWN_CURRENCY),
            ("RUBLES", UNKNOWN_CURRENCY),
            ("R$B", UNKNOWN_CURRENCY),
            ("РУБ", UNKNOWN_CURRENCY),
            ("<script>", UNKNOWN_CURRENCY),
            (UNKNOWN_CURRENCY, UNKNOWN_CURRENCY),
        ] {
            let recorded_as = donation(None, "", sent).within_limits().currency;
            assert_eq!(recorded_as, recorded, "{sent:?}");
        }
    }
}
