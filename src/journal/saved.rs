//! Facts an operation records about the cluster before changing it, typed: the autoscaler a restore removes ([`SavedHpa`]) and the revisions journaled as text by older versions.

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use serde::{Deserialize, Serialize};

/// A revision as journaled: a number, or text by the versions before 3.
#[derive(Deserialize)]
#[serde(untagged)]
enum Written {
    Number(i64),
    Text(String),
}

/// A revision journaled as a number, or as text by the versions before 3 (`"3"`; `""` when the
/// Deployment had no revision, read as none).
pub(super) fn revision_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<Written>::deserialize(d)? {
        Some(Written::Number(n)) => Some(n),
        Some(Written::Text(t)) => t.parse().ok(),
        None => None,
    })
}

/// A rollback's starting revision journaled as a number, or as text by the versions before 3
/// (`"4"`; `""` when the Deployment had none, read as revision 0 so that it stays recorded).
pub(super) fn starting_revision<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    Ok(match Option::<Written>::deserialize(d)? {
        Some(Written::Number(n)) => Some(n),
        Some(Written::Text(t)) => Some(t.parse().unwrap_or(0)),
        None => None,
    })
}

/// The app's autoscaler as a restore found it (name, labels, annotations and spec), to create it
/// again when the app is scaled back. Journaled, as always, as the autoscaler's JSON in a string.
#[derive(Debug, Clone, PartialEq)]
pub enum SavedHpa {
    Spec(Box<HorizontalPodAutoscaler>),
    /// What the journal holds does not read as an autoscaler (versions before 3 journaled `""`
    /// when they could not write the snapshot). The record still loads, so the restore still
    /// resumes and scales the app back to its recorded replicas, which matters more; the scale
    /// back then fails naming the autoscaler (`hpa_name`) to create again by hand, rather than
    /// the whole journal being unreadable and the app left at zero.
    Unreadable(String),
}

/// An autoscaler holds no floating-point numbers, so equality is total.
impl Eq for SavedHpa {}

impl SavedHpa {
    /// What is kept of `hpa`: its name, labels, annotations and spec, not its status.
    pub fn of(hpa: &HorizontalPodAutoscaler) -> SavedHpa {
        SavedHpa::Spec(Box::new(HorizontalPodAutoscaler {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: hpa.metadata.name.clone(),
                labels: hpa.metadata.labels.clone(),
                annotations: hpa.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: hpa.spec.clone(),
            status: None,
        }))
    }

    /// The autoscaler's JSON, as the cluster creates it from.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        match self {
            SavedHpa::Spec(hpa) => serde_json::to_string(hpa),
            SavedHpa::Unreadable(text) => Ok(text.clone()),
        }
    }
}

impl From<String> for SavedHpa {
    fn from(text: String) -> SavedHpa {
        match serde_json::from_str(&text) {
            Ok(hpa) => SavedHpa::Spec(Box::new(hpa)),
            Err(_) => SavedHpa::Unreadable(text),
        }
    }
}

impl Serialize for SavedHpa {
    /// A snapshot that cannot be written fails the journal write, and so the step, before the
    /// autoscaler is removed: never `""` in its place.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_json().map_err(serde::ser::Error::custom)?)
    }
}

impl<'de> Deserialize<'de> for SavedHpa {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<SavedHpa, D::Error> {
        String::deserialize(d).map(SavedHpa::from)
    }
}
