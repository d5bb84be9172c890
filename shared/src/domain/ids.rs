//! Who and what the application keeps apart: streamers (by Twitch user id), DonationAlerts
//! accounts, the two providers, and the status of a stored connection.

/// A provider whose tokens are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Twitch,
    DonationAlerts,
}

impl Provider {
    /// The name people know it by.
    pub fn name(self) -> &'static str {
        match self {
            Self::Twitch => "Twitch",
            Self::DonationAlerts => "DonationAlerts",
        }
    }

    /// The variables that must be set to talk to it.
    pub(crate) fn credential_variables(self) -> &'static str {
        match self {
            Self::Twitch => "TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET",
            Self::DonationAlerts => "DA_CLIENT_ID and DA_CLIENT_SECRET",
        }
    }

    /// Where an operator registers an application with this provider.
    pub(crate) fn developer_console(self) -> &'static str {
        match self {
            Self::Twitch => "https://dev.twitch.tv/console/apps",
            Self::DonationAlerts => "https://www.donationalerts.com/application/clients",
        }
    }

    /// The `provider` column's value and the name in lock keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Twitch => "twitch",
            Self::DonationAlerts => "donationalerts",
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `status` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenStatus {
    Active,
    /// The provider refused the tokens; the streamer must connect again.
    NeedReauth,
    Revoked,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedReauth => "need_reauth",
            Self::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "need_reauth" => Some(Self::NeedReauth),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// A Twitch user id (also the id of a streamer everywhere in this project): 1 to 20 ASCII
/// digits, as Twitch issues them. Parsed at the edge, so nothing else sees a malformed one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TwitchUserId(String);

impl TwitchUserId {
    pub fn parse(text: &str) -> Option<Self> {
        (!text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TwitchUserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A DonationAlerts user id: the account a streamer connected, and the first part of every
/// donation's event id (`da:{daUserId}:{donationId}`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct DaUserId(pub i64);

impl std::fmt::Display for DaUserId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}
