//! etcd flags that mean nothing to a Cairn member (the v2 API, zap's log
//! outputs, pprof, WAL and snapshot file counts, …): taken, so that an etcd
//! unit's command line starts a member instead of failing on an unknown
//! flag, and logged as ignored, as `ETCD_*` variables for them are.

/// One field per flag; the values are only reported.
#[derive(Debug, Default, clap::Args)]
pub struct EtcdOnlyFlags {
    /// etcd's v2 API (Cairn serves v3 only).
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub enable_v2: Option<String>,
    /// etcd's logger (`zap`); Cairn logs with `tracing` to stderr.
    #[arg(long, hide = true)]
    pub logger: Option<String>,
    /// zap's outputs; Cairn logs to stderr.
    #[arg(long, hide = true)]
    pub log_outputs: Option<String>,
    /// Go's pprof endpoints.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub enable_pprof: Option<String>,
    /// How many snapshot files etcd keeps; Cairn keeps one.
    #[arg(long, hide = true)]
    pub max_snapshots: Option<String>,
    /// How many WAL files etcd keeps; Cairn's log drops what snapshots cover.
    #[arg(long, hide = true)]
    pub max_wals: Option<String>,
    /// etcd's `basic` or `extensive` metrics; Cairn serves one set.
    #[arg(long, hide = true)]
    pub metrics: Option<String>,
    /// Cairn always checks a reconfiguration against the started members.
    #[arg(long, hide = true, num_args = 0..=1, default_missing_value = "true")]
    pub strict_reconfig_check: Option<String>,
}

impl EtcdOnlyFlags {
    /// The flags given, as `--name=value`, for the start's warning.
    pub fn given(&self) -> Vec<String> {
        [
            ("enable-v2", &self.enable_v2),
            ("logger", &self.logger),
            ("log-outputs", &self.log_outputs),
            ("enable-pprof", &self.enable_pprof),
            ("max-snapshots", &self.max_snapshots),
            ("max-wals", &self.max_wals),
            ("metrics", &self.metrics),
            ("strict-reconfig-check", &self.strict_reconfig_check),
        ]
        .into_iter()
        .filter_map(|(flag, value)| value.as_ref().map(|v| format!("--{flag}={v}")))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    /// A kubeadm- or Debian-style etcd command line with flags Cairn has no
    /// use for parses, and each is reported.
    #[test]
    fn etcd_only_flags_are_taken_and_reported() {
        let cli = crate::Cli::try_parse_from([
            "cairn",
            "serve",
            "--name",
            "infra0",
            "--enable-v2",
            "--logger",
            "zap",
            "--log-outputs=stderr",
            "--max-wals",
            "5",
            "--strict-reconfig-check=false",
        ])
        .expect("parses");
        let crate::Command::Serve(args) = cli.command else {
            panic!("not serve")
        };
        assert_eq!(
            args.etcd_only.given(),
            [
                "--enable-v2=true",
                "--logger=zap",
                "--log-outputs=stderr",
                "--max-wals=5",
                "--strict-reconfig-check=false",
            ]
        );
        let crate::Command::Serve(plain) = crate::Cli::parse_from(["cairn", "serve"]).command
        else {
            panic!("not serve")
        };
        assert!(plain.etcd_only.given().is_empty());
    }
}
