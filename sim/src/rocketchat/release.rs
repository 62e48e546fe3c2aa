//! The Rocket.Chat releases the simulator can play, and which DDP methods and REST routes each one serves.

use std::fmt;
use std::str::FromStr;

/// One Rocket.Chat release line the simulator serves at a time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Release {
    /// A 7.x line (7.10 LTS, support ended 2026-09).
    V7_10,
    /// 8.5 LTS.
    V8_5,
    /// 8.9 LTS.
    V8_9,
    /// 9.0, the newest: most realtime methods are gone.
    #[default]
    V9_0,
}

/// The DDP methods removed in 8.0.
const GONE_IN_8_0: &[&str] = &["getUserRoles", "getRoomRoles"];

/// The DDP methods removed in 9.0 (besides those removed in 8.0).
const GONE_IN_9_0: &[&str] = &[
    "sendMessage",
    "updateMessage",
    "getRoomIdByNameOrId",
    "joinRoom",
    "loadHistory",
    "loadNextMessages",
    "loadMissedMessages",
];

/// Why a release name was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown Rocket.Chat release `{0}`: choose one of 7.10, 8.5, 8.9, 9.0")]
pub struct UnknownRelease(pub String);

impl Release {
    /// The newest release, which the simulator plays unless told otherwise.
    pub const NEWEST: Release = Release::V9_0;

    /// Every release, oldest first.
    pub const ALL: [Release; 4] = [Release::V7_10, Release::V8_5, Release::V8_9, Release::V9_0];

    /// The full version, as a server with `view-statistics` reports it (`9.0.0`).
    pub fn version(&self) -> &'static str {
        match self {
            Release::V7_10 => "7.10.0",
            Release::V8_5 => "8.5.0",
            Release::V8_9 => "8.9.0",
            Release::V9_0 => "9.0.0",
        }
    }

    /// The version without its patch number, as `GET /api/info` shows it to everyone else (`9.0`).
    pub fn short_version(&self) -> &'static str {
        match self {
            Release::V7_10 => "7.10",
            Release::V8_5 => "8.5",
            Release::V8_9 => "8.9",
            Release::V9_0 => "9.0",
        }
    }

    fn major_minor(&self) -> (u32, u32) {
        match self {
            Release::V7_10 => (7, 10),
            Release::V8_5 => (8, 5),
            Release::V8_9 => (8, 9),
            Release::V9_0 => (9, 0),
        }
    }

    /// Whether this release still serves the DDP method `name` (over the socket and `method.call`).
    pub fn has_method(&self, name: &str) -> bool {
        let at_least = |v: (u32, u32)| self.major_minor() >= v;
        if at_least((8, 0)) && GONE_IN_8_0.contains(&name) {
            return false;
        }
        !(at_least((9, 0)) && GONE_IN_9_0.contains(&name))
    }

    /// Whether this release serves the REST route `route` (`rooms.join`, `chat.sendMessage`, ...).
    pub fn has_route(&self, route: &str) -> bool {
        match route {
            "rooms.join" => self.major_minor() >= (8, 6),
            _ => true,
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_version())
    }
}

impl FromStr for Release {
    type Err = UnknownRelease;

    /// `9`, `9.0` or `9.0.0`; `8.5`, `8.9` (with or without `.0`); `7`, `7.10`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let t = t.strip_prefix(['v', 'V']).unwrap_or(t);
        match t {
            "9" | "9.0" | "9.0.0" => Ok(Release::V9_0),
            "8.9" | "8.9.0" => Ok(Release::V8_9),
            "8.5" | "8.5.0" => Ok(Release::V8_5),
            "7" | "7.10" | "7.10.0" => Ok(Release::V7_10),
            _ => Err(UnknownRelease(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_parse_with_or_without_minor_and_patch_and_others_name_the_choices() {
        let table = [
            ("9", Ok(Release::V9_0)),
            ("9.0", Ok(Release::V9_0)),
            ("9.0.0", Ok(Release::V9_0)),
            ("8.9", Ok(Release::V8_9)),
            ("8.9.0", Ok(Release::V8_9)),
            ("8.5", Ok(Release::V8_5)),
            ("7", Ok(Release::V7_10)),
            ("7.10", Ok(Release::V7_10)),
            (" v8.5 ", Ok(Release::V8_5)),
        ];
        for (text, want) in table {
            assert_eq!(text.parse::<Release>(), want, "{text}");
        }
        for bad in ["", "8", "8.6", "10", "nine", "9.1"] {
            let e = bad.parse::<Release>().unwrap_err().to_string();
            assert!(e.contains("7.10, 8.5, 8.9, 9.0"), "{bad}: {e}");
        }
    }

    #[test]
    fn every_release_prints_as_it_parses_and_the_newest_is_9_0() {
        for r in Release::ALL {
            assert_eq!(r.to_string().parse::<Release>(), Ok(r));
            assert_eq!(r.version().parse::<Release>(), Ok(r));
            assert!(r.version().starts_with(r.short_version()));
        }
        assert_eq!(Release::NEWEST, Release::V9_0);
        assert_eq!(Release::default(), Release::NEWEST);
        assert_eq!(Release::V9_0.version(), "9.0.0");
        assert_eq!(Release::V7_10.short_version(), "7.10");
    }

    #[test]
    fn each_release_serves_the_methods_it_still_has() {
        // (method, served by 7.10, 8.5, 8.9, 9.0)
        let table: &[(&str, [bool; 4])] = &[
            ("login", [true, true, true, true]),
            ("subscriptions/get", [true, true, true, true]),
            ("createDirectMessage", [true, true, true, true]),
            ("setReaction", [true, true, true, true]),
            ("getUserRoles", [true, false, false, false]),
            ("getRoomRoles", [true, false, false, false]),
            ("sendMessage", [true, true, true, false]),
            ("updateMessage", [true, true, true, false]),
            ("getRoomIdByNameOrId", [true, true, true, false]),
            ("joinRoom", [true, true, true, false]),
            ("loadHistory", [true, true, true, false]),
            ("loadNextMessages", [true, true, true, false]),
            ("loadMissedMessages", [true, true, true, false]),
        ];
        for (method, want) in table {
            let got = Release::ALL.map(|r| r.has_method(method));
            assert_eq!(&got, want, "{method}");
        }
    }

    #[test]
    fn rooms_join_exists_from_8_6_and_every_other_route_everywhere() {
        let table: &[(&str, [bool; 4])] = &[
            ("rooms.join", [false, false, true, true]),
            ("channels.join", [true, true, true, true]),
            ("chat.sendMessage", [true, true, true, true]),
            ("rooms.info", [true, true, true, true]),
        ];
        for (route, want) in table {
            let got = Release::ALL.map(|r| r.has_route(route));
            assert_eq!(&got, want, "{route}");
        }
    }
}
