//! [`WirePath`]: a file path as bytes on the wire, so a Unix file name that is not UTF-8
//! reaches the C loader unchanged instead of as a lossy (and missing) look-alike.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A file path as the bytes the operating system uses for it.
///
/// On the wire it is a JSON string when the bytes are UTF-8 (readable in logs) and
/// `{"bytes": [..]}` otherwise, so any Unix file name survives the trip unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "WirePathRepr", into = "WirePathRepr")]
pub struct WirePath(Vec<u8>);

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum WirePathRepr {
    Text(String),
    Bytes { bytes: Vec<u8> },
}

impl From<WirePathRepr> for WirePath {
    fn from(r: WirePathRepr) -> Self {
        match r {
            WirePathRepr::Text(s) => WirePath(s.into_bytes()),
            WirePathRepr::Bytes { bytes } => WirePath(bytes),
        }
    }
}

impl From<WirePath> for WirePathRepr {
    fn from(p: WirePath) -> Self {
        match String::from_utf8(p.0) {
            Ok(s) => WirePathRepr::Text(s),
            Err(e) => WirePathRepr::Bytes {
                bytes: e.into_bytes(),
            },
        }
    }
}

impl WirePath {
    /// The path's bytes. `None` only off Unix, for a path that is not valid Unicode (there
    /// the C libraries take UTF-8, so such a path cannot be passed on faithfully).
    pub fn new(path: &Path) -> Option<WirePath> {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            Some(WirePath(path.as_os_str().as_bytes().to_vec()))
        }
        #[cfg(not(unix))]
        {
            path.to_str().map(|s| WirePath(s.as_bytes().to_vec()))
        }
    }

    /// The raw bytes (what a C `fopen` receives).
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The path again. Off Unix, bytes that are not UTF-8 are replaced (they cannot occur
    /// there: [`WirePath::new`] refuses them).
    pub fn to_path_buf(&self) -> PathBuf {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(&self.0))
        }
        #[cfg(not(unix))]
        {
            PathBuf::from(String::from_utf8_lossy(&self.0).into_owned())
        }
    }

    /// For messages: the path with any non-UTF-8 bytes shown as U+FFFD.
    pub fn display(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{read_frame, write_frame, Request};

    #[test]
    fn paths_cross_as_bytes_readable_when_utf8() {
        let text = WirePath(b"/models/m\xc3\xa8re.gguf".to_vec());
        let json = serde_json::to_string(&text).unwrap();
        assert_eq!(json, "\"/models/mère.gguf\"");
        let raw = WirePath(b"/models/m\xe8re-\xff.gguf".to_vec());
        let json = serde_json::to_string(&raw).unwrap();
        assert!(json.starts_with("{\"bytes\":["), "{json}");
        for p in [text, raw] {
            let r = Request::Load {
                model_path: p.clone(),
                n_ctx: 0,
                n_threads: 0,
                vocab_only: true,
            };
            let mut buf = Vec::new();
            write_frame(&mut buf, &r, &[]).unwrap();
            let (back, _): (Request, _) = read_frame(&mut &buf[..]).unwrap().unwrap();
            assert_eq!(back, r);
            #[cfg(unix)]
            assert_eq!(WirePath::new(&p.to_path_buf()), Some(p));
        }
    }
}
