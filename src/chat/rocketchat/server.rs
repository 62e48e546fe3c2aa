//! Which Rocket.Chat server the bot talks to: its version (from `/api/info`), the oldest one supported, and the REST route each action takes on it.

use std::fmt;
use std::str::FromStr;

/// A server version as `/api/info` reports it (`9.0`, `8.5.1`, `7.10.0-rc.2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl ServerVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> ServerVersion {
        ServerVersion {
            major,
            minor,
            patch,
        }
    }
}

/// The oldest server the bot runs against. Every route it uses exists from 7.0 on (`rooms.media`
/// since 6.x, `chat.sendMessage` with a client-chosen `_id`, `rooms.info`, the per-type
/// `*.history`); the 7.x line is the oldest one the simulator reproduces and the tests play
/// against; and everything older left support before 7.10 LTS did (September 2026).
pub const OLDEST_SUPPORTED: ServerVersion = ServerVersion::new(7, 0, 0);

impl fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// Why a version string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a Rocket.Chat version (expected MAJOR.MINOR[.PATCH])")]
pub struct BadVersion(pub String);

impl FromStr for ServerVersion {
    type Err = BadVersion;

    /// `9.0`, `9.0.0`, `v8.5.1`, `7.10.0-rc.2` (a pre-release counts as its release).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadVersion(s.chars().take(40).collect());
        let t = s.trim().trim_start_matches(['v', 'V']);
        let core = t.split(['-', '+', ' ']).next().unwrap_or_default();
        let mut parts = core.split('.');
        let mut num = |required: bool| -> Result<u32, BadVersion> {
            match parts.next() {
                Some(p)
                    if !p.is_empty() && p.len() <= 6 && p.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    p.parse().map_err(|_| bad())
                }
                None if !required => Ok(0),
                _ => Err(bad()),
            }
        };
        let major = num(true)?;
        let minor = num(true)?;
        let patch = num(false)?;
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(ServerVersion::new(major, minor, patch))
    }
}

/// How the bot joins a public channel it is not in yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinRoute {
    /// `POST rooms.join {roomId}` (8.6 and later; the replacement for the `joinRoom` method).
    RoomsJoin,
    /// `POST channels.join {roomId}` (every version; public channels only).
    ChannelsJoin,
}

/// The REST route each action takes on one server version. The socket is used for nothing but
/// `login` with a resume token and the streams, whatever the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// Posting, with the bot's own message `_id` (attachments and buttons too).
    pub send: &'static str,
    /// Editing a posted message.
    pub edit: &'static str,
    /// Adding a reaction.
    pub react: &'static str,
    /// Reading one message back (did a post whose answer was lost arrive?).
    pub get_message: &'static str,
    /// Opening a direct message.
    pub direct: &'static str,
    /// A room by name or id.
    pub room_info: &'static str,
    /// Joining a public channel.
    pub join: JoinRoute,
    /// Uploading a file, then posting it.
    pub upload: (&'static str, &'static str),
    /// The rooms the bot is in (for catching up).
    pub subscriptions: &'static str,
    /// A user's roles.
    pub user_info: &'static str,
    /// Who holds which permission.
    pub permissions: &'static str,
    /// Public settings (`Message_AllowUnrecognizedSlashCommand`).
    pub public_settings: &'static str,
}

impl Endpoints {
    /// History of one room, by its type (`c`, `p`, `d`): every supported version has these.
    pub fn history(&self, room_type: &str) -> Option<&'static str> {
        match room_type {
            "c" => Some("channels.history"),
            "p" => Some("groups.history"),
            "d" => Some("im.history"),
            _ => None,
        }
    }
}

/// Why the bot will not talk to a server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Rocket.Chat {found} is older than the oldest version rocketops supports ({oldest}); upgrade the server"
)]
pub struct Unsupported {
    pub found: ServerVersion,
    pub oldest: ServerVersion,
}

/// The newest release the routes were checked against; a server whose version cannot be read
/// is taken to be this one.
pub const NEWEST_KNOWN: ServerVersion = ServerVersion::new(9, 0, 0);

/// Pure: the routes for a server version, or why that version is refused.
pub fn endpoints(v: ServerVersion) -> Result<Endpoints, Unsupported> {
    if v < OLDEST_SUPPORTED {
        return Err(Unsupported {
            found: v,
            oldest: OLDEST_SUPPORTED,
        });
    }
    Ok(routes(v))
}

/// Pure: the routes for a supported version (no floor check).
pub fn routes(v: ServerVersion) -> Endpoints {
    Endpoints {
        send: "chat.sendMessage",
        edit: "chat.update",
        react: "chat.react",
        get_message: "chat.getMessage",
        direct: "im.create",
        room_info: "rooms.info",
        join: if v >= ServerVersion::new(8, 6, 0) {
            JoinRoute::RoomsJoin
        } else {
            JoinRoute::ChannelsJoin
        },
        upload: ("rooms.media", "rooms.mediaConfirm"),
        subscriptions: "subscriptions.get",
        user_info: "users.info",
        permissions: "permissions.listAll",
        public_settings: "settings.public",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> ServerVersion {
        s.parse().unwrap()
    }

    #[test]
    fn versions_read_as_the_server_and_its_releases_write_them() {
        assert_eq!(v("9.0"), ServerVersion::new(9, 0, 0));
        assert_eq!(v("8.5.1"), ServerVersion::new(8, 5, 1));
        assert_eq!(v("v7.10.0-rc.2"), ServerVersion::new(7, 10, 0));
        assert_eq!(v(" 9.1.0+build "), ServerVersion::new(9, 1, 0));
        for bad in [
            "",
            "9",
            "nine",
            "9.x",
            "9.0.0.1",
            "9..0",
            "-1.0",
            "99999999.0",
        ] {
            assert!(bad.parse::<ServerVersion>().is_err(), "{bad}");
        }
        assert!(v("7.10") > v("7.9.3"), "minor numbers compare as numbers");
    }

    #[test]
    fn each_version_maps_to_the_routes_it_serves() {
        use JoinRoute::*;
        let table = [
            ("7.0", ChannelsJoin),
            ("7.10.4", ChannelsJoin),
            ("8.5.0", ChannelsJoin),
            ("8.6.0", RoomsJoin),
            ("8.9.2", RoomsJoin),
            ("9.0.0", RoomsJoin),
            ("9.1", RoomsJoin),
        ];
        for (version, join) in table {
            let e = endpoints(v(version)).unwrap();
            assert_eq!(e.join, join, "{version}");
            assert_eq!(e.send, "chat.sendMessage", "{version}");
            assert_eq!(e.edit, "chat.update", "{version}");
            assert_eq!(e.upload, ("rooms.media", "rooms.mediaConfirm"), "{version}");
            assert_eq!(e.history("p"), Some("groups.history"), "{version}");
            assert_eq!(e.history("l"), None, "livechat is not listened to");
        }
    }

    #[test]
    fn a_server_older_than_the_floor_is_refused_naming_both_versions() {
        let err = endpoints(v("6.13.1")).unwrap_err();
        assert_eq!(err.found, v("6.13.1"));
        assert_eq!(err.oldest, OLDEST_SUPPORTED);
        let text = err.to_string();
        assert!(text.contains("6.13.1") && text.contains("7.0.0"), "{text}");
        assert!(endpoints(OLDEST_SUPPORTED).is_ok());
    }

    proptest! {
        #[test]
        fn any_text_parses_or_is_refused_without_panicking(s in "\\PC{0,30}") {
            let _ = s.parse::<ServerVersion>();
        }

        #[test]
        fn a_printed_version_reads_back(a in 0u32..1000, b in 0u32..1000, c in 0u32..1000) {
            let v = ServerVersion::new(a, b, c);
            prop_assert_eq!(v.to_string().parse::<ServerVersion>().unwrap(), v);
        }
    }
}
