use super::*;

struct Rig {
    supervisor: Supervisor,
    registry: ServiceRegistry,
    cgroups: tempfile::TempDir,
}

fn rig() -> Rig {
    let registry = ServiceRegistry::default();
    let reaper = Arc::new(Reaper::new(false));
    tokio::spawn(reaper.clone().run());
    let cgroups = tempfile::tempdir().unwrap();
    Rig {
        supervisor: Supervisor::new(registry.clone(), reaper, Cgroups::new(cgroups.path())),
        registry,
        cgroups,
    }
}

fn spec(id: &str, script: &str) -> ServiceSpec {
    ServiceSpec {
        id: id.into(),
        program: "/bin/sh".into(),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        depends_on: vec![],
        gate: None,
        health: None,
        health_interval: Duration::from_millis(20),
        cgroup: format!("system/{id}"),
        memory: MemoryLimits::default(),
        oom_score_adj: 500,
        directories: vec![],
        files: vec![],
        stop_timeout: Duration::from_millis(300),
        backoff: Backoff {
            first: Duration::from_millis(10),
            max: Duration::from_millis(40),
            stable: Duration::from_secs(60),
        },
    }
}

impl Rig {
    fn state(&self, id: &str) -> String {
        self.registry
            .list()
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| s.state)
            .unwrap_or_default()
    }

    fn messages(&self, id: &str) -> Vec<String> {
        self.registry
            .list()
            .into_iter()
            .find(|s| s.id == id)
            .map(|s| {
                s.events
                    .unwrap()
                    .events
                    .into_iter()
                    .map(|e| e.msg)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn pid(&self, id: &str) -> i32 {
        let started = self
            .messages(id)
            .into_iter()
            .rev()
            .find_map(|m| {
                m.strip_prefix("Started with PID ")
                    .and_then(|rest| rest.split(':').next().map(str::to_owned))
            })
            .expect("the service started");
        started.parse().unwrap()
    }

    async fn until(&self, what: &str, condition: impl Fn(&Rig) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition(self) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[tokio::test]
async fn starts_a_service_after_its_dependency_is_up() {
    let rig = rig();
    let mut web = spec("web", "exec sleep 1000");
    web.depends_on = vec!["db".into()];
    rig.supervisor.add(web);
    rig.until("web waiting", |r| r.state("web") == "Waiting")
        .await;
    assert!(
        rig.messages("web")
            .contains(&"Waiting for service db to be up".into())
    );
    rig.supervisor.add(spec("db", "exec sleep 1000"));
    rig.until("both running", |r| {
        r.state("db") == "Running" && r.state("web") == "Running"
    })
    .await;
    rig.supervisor.stop_all().await;
    assert_eq!(rig.state("web"), "Finished");
}

#[tokio::test]
async fn restarts_a_failing_service_with_growing_backoff() {
    let rig = rig();
    rig.supervisor.add(spec("flaky", "echo attempt; exit 3"));
    rig.until("four attempts", |r| {
        r.messages("flaky")
            .contains(&"Restarting in 40ms".to_owned())
    })
    .await;
    let messages = rig.messages("flaky");
    assert!(messages.contains(&"Service exited with code 3".to_owned()));
    let delays: Vec<&String> = messages
        .iter()
        .filter(|m| m.starts_with("Restarting in"))
        .collect();
    assert_eq!(
        delays[..3],
        [
            "Restarting in 10ms",
            "Restarting in 20ms",
            "Restarting in 40ms"
        ]
    );
    let logs = rig.supervisor.logs("flaky").unwrap().snapshot(None);
    assert!(String::from_utf8_lossy(&logs).matches("attempt\n").count() >= 3);
    rig.supervisor.stop("flaky").await.unwrap();
    assert_eq!(rig.state("flaky"), "Finished");
}

fn output(rig: &Rig, id: &str) -> String {
    String::from_utf8_lossy(&rig.supervisor.logs(id).unwrap().snapshot(None)).into_owned()
}

#[tokio::test]
async fn stop_start_and_restart_on_request() {
    let rig = rig();
    rig.supervisor.add(spec("svc", "echo up; exec sleep 1000"));
    rig.until("first output", |r| output(r, "svc") == "up\n")
        .await;
    let first = rig.pid("svc");
    rig.supervisor.restart("svc").await.unwrap();
    assert!(!alive(first));
    rig.until("second output", |r| output(r, "svc") == "up\nup\n")
        .await;
    let second = rig.pid("svc");
    assert_ne!(first, second);
    rig.supervisor.stop("svc").await.unwrap();
    assert!(!alive(second));
    assert_eq!(rig.state("svc"), "Finished");
    assert_eq!(rig.messages("svc").last().unwrap(), "Service stopped");
    rig.supervisor.start("svc").await.unwrap();
    rig.until("third output", |r| output(r, "svc") == "up\nup\nup\n")
        .await;
    assert_eq!(rig.state("svc"), "Running");
    rig.supervisor.stop("svc").await.unwrap();
}

#[tokio::test]
async fn kills_a_service_that_ignores_sigterm() {
    let rig = rig();
    rig.supervisor.add(spec(
        "stubborn",
        "trap '' TERM; echo ready; exec sleep 1000",
    ));
    rig.until("ready", |r| output(r, "stubborn") == "ready\n")
        .await;
    let pid = rig.pid("stubborn");
    let asked = Instant::now();
    rig.supervisor.stop("stubborn").await.unwrap();
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert!(!alive(pid));
}

#[tokio::test]
async fn a_dependant_waits_for_health_and_the_gate() {
    let rig = rig();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("api.sock");
    let mut api = spec("api", "exec sleep 1000");
    api.health = Some(HealthCheck::UnixSocket(socket.clone()));
    let (open, gate) = watch::channel(false);
    let mut client = spec("client", "exec sleep 1000");
    client.depends_on = vec!["api".into()];
    client.gate = Some(Gate {
        waiting_for: "talosctl bootstrap".into(),
        open: gate,
    });
    rig.supervisor.add(api);
    rig.supervisor.add(client);
    rig.until("api unhealthy", |r| {
        r.messages("api")
            .iter()
            .any(|m| m.starts_with("Health check failed: connecting to"))
    })
    .await;
    assert_eq!(rig.state("client"), "Waiting");
    let _listener = tokio::net::UnixListener::bind(&socket).unwrap();
    rig.until("client at the gate", |r| {
        r.messages("client").last().map(String::as_str) == Some("Waiting for talosctl bootstrap")
    })
    .await;
    open.send_replace(true);
    rig.until("client running", |r| r.state("client") == "Running")
        .await;
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn confines_the_process_to_its_cgroup_with_its_oom_score() {
    let rig = rig();
    let mut svc = spec("confined", "exec sleep 1000");
    svc.memory = MemoryLimits {
        min: 48 << 20,
        max: Some(128 << 20),
    };
    rig.supervisor.add(svc);
    rig.until("running", |r| r.state("confined") == "Running")
        .await;
    let pid = rig.pid("confined");
    let group = rig.cgroups.path().join("system/confined");
    // A real cgroup.procs moves the writer; this stand-in records what the child wrote.
    assert_eq!(
        std::fs::read_to_string(group.join("cgroup.procs")).unwrap(),
        "0"
    );
    assert_eq!(
        std::fs::read_to_string(group.join("memory.min")).unwrap(),
        "50331648"
    );
    assert_eq!(
        std::fs::read_to_string(group.join("memory.max")).unwrap(),
        "134217728"
    );
    let oom = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).unwrap();
    assert_eq!(oom.trim(), "500");
    rig.supervisor.stop("confined").await.unwrap();
}

#[tokio::test]
async fn reports_missing_programs_and_unknown_services() {
    let rig = rig();
    let mut absent = spec("kubelet", "");
    absent.program = "/usr/bin/kubelet-not-here".into();
    rig.supervisor.add(absent);
    rig.until("failed", |r| {
        r.messages("kubelet")
            .contains(&"/usr/bin/kubelet-not-here is not in this image".to_owned())
    })
    .await;
    rig.registry
        .set("apid", ServiceState::Running, "in-process");
    assert_eq!(
        rig.supervisor.restart("apid").await,
        Err(ControlError::NotSupervised("apid".into()))
    );
    assert_eq!(
        rig.supervisor.stop("nope").await,
        Err(ControlError::NotFound("nope".into()))
    );
    rig.supervisor.stop("kubelet").await.unwrap();
    assert_eq!(rig.state("kubelet"), "Finished");
}

#[tokio::test]
async fn a_new_plan_restarts_changed_services_starts_new_ones_and_stops_dropped_ones() {
    let rig = rig();
    let steady = spec("steady", "echo steady; exec sleep 1000");
    let tuned = spec("tuned", "echo v1; exec sleep 1000");
    let dropped = spec("dropped", "exec sleep 1000");
    rig.supervisor
        .reconcile(vec![steady.clone(), tuned, dropped])
        .await;
    rig.until("all running", |r| {
        ["steady", "tuned", "dropped"]
            .iter()
            .all(|id| r.state(id) == "Running")
    })
    .await;
    rig.until("first output", |r| output(r, "tuned") == "v1\n")
        .await;
    let (steady_pid, tuned_pid, dropped_pid) =
        (rig.pid("steady"), rig.pid("tuned"), rig.pid("dropped"));

    let mut retuned = spec("tuned", "echo v2; exec sleep 1000");
    retuned.env.push(("LEVEL".into(), "debug".into()));
    let added = spec("added", "exec sleep 1000");
    rig.supervisor
        .reconcile(vec![steady.clone(), retuned.clone(), added])
        .await;
    assert!(!alive(tuned_pid), "the old process stopped first");
    assert!(!alive(dropped_pid));
    assert_eq!(rig.state("dropped"), "Finished");
    assert!(rig.supervisor.logs("dropped").is_none(), "forgotten");
    rig.until("tuned restarted with v2", |r| {
        output(r, "tuned") == "v1\nv2\n" && r.state("tuned") == "Running"
    })
    .await;
    assert!(
        rig.messages("tuned")
            .contains(&"Restarting service with changed settings".to_owned())
    );
    rig.until("added running", |r| r.state("added") == "Running")
        .await;
    assert_eq!(
        rig.pid("steady"),
        steady_pid,
        "unchanged settings: no restart"
    );
    assert_eq!(output(&rig, "steady"), "steady\n");

    // The same plan again changes nothing.
    let tuned_pid = rig.pid("tuned");
    rig.supervisor
        .reconcile(vec![steady, retuned, spec("added", "exec sleep 1000")])
        .await;
    assert_eq!(rig.pid("tuned"), tuned_pid);
    rig.supervisor.stop_all().await;
}

#[tokio::test]
async fn new_settings_for_a_stopped_or_waiting_service_apply_when_it_starts() {
    let rig = rig();
    rig.supervisor
        .reconcile(vec![spec("svc", "echo v1; exec sleep 1000")])
        .await;
    rig.until("v1", |r| output(r, "svc") == "v1\n").await;
    rig.supervisor.stop("svc").await.unwrap();
    rig.supervisor
        .reconcile(vec![spec("svc", "echo v2; exec sleep 1000")])
        .await;
    assert_eq!(
        rig.state("svc"),
        "Finished",
        "a stopped service stays stopped"
    );
    rig.supervisor.start("svc").await.unwrap();
    rig.until("v2", |r| output(r, "svc") == "v1\nv2\n").await;

    let mut waiting = spec("waiting", "echo ran; exec sleep 1000");
    waiting.depends_on = vec!["never".into()];
    rig.supervisor
        .reconcile(vec![spec("svc", "echo v2; exec sleep 1000"), waiting])
        .await;
    rig.until("waiting", |r| r.state("waiting") == "Waiting")
        .await;
    rig.supervisor
        .reconcile(vec![
            spec("svc", "echo v2; exec sleep 1000"),
            spec("waiting", "echo ran; exec sleep 1000"),
        ])
        .await;
    rig.until("no longer waiting", |r| output(r, "waiting") == "ran\n")
        .await;
    rig.supervisor.stop_all().await;
}
