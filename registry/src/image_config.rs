//! What an image runs: the `config` object of an OCI image configuration
//! (`application/vnd.oci.image.config.v1+json`, Docker's `container_config` aside):
//! `Entrypoint`, `Cmd`, `Env` and `WorkingDir`, as a runtime reads them to start the
//! container ([`RunConfig::parse`]).
//!
//! The document comes from the registry (digest-checked, but written by whoever pushed the
//! image): it is read with bounds ([`MAX_IMAGE_CONFIG`] bytes, [`MAX_ARGS`] arguments and
//! [`MAX_ENV`] variables of at most [`MAX_ARG`] bytes each) and every other field is
//! ignored.

use serde::Deserialize;

/// Largest image configuration read (Docker's own images are a few KiB; a long history
/// makes them tens).
pub const MAX_IMAGE_CONFIG: u64 = 1 << 20;
/// Most `Entrypoint` plus `Cmd` arguments, and most `Env` variables, kept.
pub const MAX_ARGS: usize = 256;
/// Most `Env` entries read.
pub const MAX_ENV: usize = 1024;
/// Longest argument or variable (`NAME=value`) kept, in bytes.
pub const MAX_ARG: usize = 4096;

/// The `PATH` a runtime uses when the image sets none (runc's and containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Why an image configuration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ImageConfigError {
    /// Longer than [`MAX_IMAGE_CONFIG`].
    #[error("image config of {0} bytes: longer than {MAX_IMAGE_CONFIG}")]
    TooLarge(u64),
    /// Not JSON of an image configuration's shape.
    #[error("not an image config: {0}")]
    Json(String),
    /// More than [`MAX_ARGS`] arguments, more than [`MAX_ENV`] variables, or one longer
    /// than [`MAX_ARG`] bytes.
    #[error("image config: {0}")]
    Limit(&'static str),
}

#[derive(Deserialize)]
struct Document {
    #[serde(default)]
    config: Option<Fields>,
}

#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "Entrypoint", default)]
    entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default)]
    cmd: Option<Vec<String>>,
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
}

/// What the image's configuration says to run ([`RunConfig::parse`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// `config.Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `config.Cmd`.
    pub cmd: Vec<String>,
    /// `config.Env` (`NAME=value`).
    pub env: Vec<String>,
    /// `config.WorkingDir` (empty: `/`).
    pub working_dir: String,
}

impl RunConfig {
    /// Read an image configuration's `config` object. A document without one (or with
    /// `null` fields) is an image that declares nothing to run: an empty [`RunConfig`].
    ///
    /// # Errors
    ///
    /// [`ImageConfigError`]: too long, not JSON of that shape, or over the limits.
    pub fn parse(bytes: &[u8]) -> Result<RunConfig, ImageConfigError> {
        if bytes.len() as u64 > MAX_IMAGE_CONFIG {
            return Err(ImageConfigError::TooLarge(bytes.len() as u64));
        }
        let doc: Document =
            serde_json::from_slice(bytes).map_err(|e| ImageConfigError::Json(e.to_string()))?;
        let Some(f) = doc.config else {
            return Ok(RunConfig::default());
        };
        let entrypoint = f.entrypoint.unwrap_or_default();
        let cmd = f.cmd.unwrap_or_default();
        let env = f.env.unwrap_or_default();
        let working_dir = f.working_dir.unwrap_or_default();
        if entrypoint.len().saturating_add(cmd.len()) > MAX_ARGS {
            return Err(ImageConfigError::Limit("too many arguments"));
        }
        if env.len() > MAX_ENV {
            return Err(ImageConfigError::Limit("too many variables"));
        }
        if entrypoint
            .iter()
            .chain(&cmd)
            .chain(&env)
            .chain([&working_dir])
            .any(|s| s.len() > MAX_ARG)
        {
            return Err(ImageConfigError::Limit("an argument or variable too long"));
        }
        Ok(RunConfig {
            entrypoint,
            cmd,
            env,
            working_dir,
        })
    }

    /// The program the container runs: `Entrypoint[0]`, else `Cmd[0]` (as a runtime
    /// builds the command line: `Entrypoint` followed by `Cmd`). `None` if both are empty,
    /// or the name is.
    pub fn program(&self) -> Option<&str> {
        self.entrypoint
            .iter()
            .chain(&self.cmd)
            .next()
            .map(String::as_str)
            .filter(|p| !p.is_empty())
    }

    /// The `PATH` the program is looked up in: the image's last `PATH=` variable, else
    /// [`DEFAULT_PATH`].
    pub fn path(&self) -> &str {
        self.env
            .iter()
            .rev()
            .find_map(|v| v.strip_prefix("PATH="))
            .unwrap_or(DEFAULT_PATH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entrypoint_then_cmd_and_the_path() {
        let c = RunConfig::parse(
            br#"{"architecture":"amd64","config":{"Env":["A=1","PATH=/opt/bin:/usr/bin"],
                "Entrypoint":["/docker-entrypoint.sh"],"Cmd":["nginx","-g"],"WorkingDir":"/app"},
                "rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        assert_eq!(c.program(), Some("/docker-entrypoint.sh"));
        assert_eq!(c.path(), "/opt/bin:/usr/bin");
        assert_eq!(c.working_dir, "/app");
        let c = RunConfig::parse(br#"{"config":{"Cmd":["python3"]}}"#).unwrap();
        assert_eq!((c.program(), c.path()), (Some("python3"), DEFAULT_PATH));
    }

    #[test]
    fn nothing_declared_is_no_program() {
        for doc in [
            &br#"{}"#[..],
            br#"{"config":null}"#,
            br#"{"config":{}}"#,
            br#"{"config":{"Entrypoint":null,"Cmd":null,"Env":null}}"#,
            br#"{"config":{"Cmd":[""]}}"#,
            br#"{"config":{"Entrypoint":[],"Cmd":[]}}"#,
        ] {
            assert_eq!(RunConfig::parse(doc).unwrap().program(), None, "{doc:?}");
        }
    }

    #[test]
    fn hostile_documents_are_errors() {
        for doc in [
            &b""[..],
            b"null",
            br#"{"config":{"Cmd":"python3"}}"#,
            br#"{"config":{"Cmd":[1]}}"#,
            br#"{"config":{"Env":[null]}}"#,
            br#"{"config":{"Cmd":["a"#,
            b"\xff\xfe",
        ] {
            assert!(
                matches!(RunConfig::parse(doc), Err(ImageConfigError::Json(_))),
                "{doc:?}"
            );
        }
        // serde reads a struct from an array too: nothing to run either way.
        assert!(RunConfig::parse(b"[]").map_or(true, |c| c.program().is_none()));
        let many = format!(
            r#"{{"config":{{"Cmd":[{}]}}}}"#,
            vec![r#""x""#; MAX_ARGS + 1].join(",")
        );
        assert_eq!(
            RunConfig::parse(many.as_bytes()),
            Err(ImageConfigError::Limit("too many arguments"))
        );
        let long = format!(r#"{{"config":{{"Cmd":["{}"]}}}}"#, "x".repeat(MAX_ARG + 1));
        assert!(matches!(
            RunConfig::parse(long.as_bytes()),
            Err(ImageConfigError::Limit(_))
        ));
        let big = vec![b' '; MAX_IMAGE_CONFIG as usize + 1];
        assert!(matches!(
            RunConfig::parse(&big),
            Err(ImageConfigError::TooLarge(_))
        ));
    }
}
