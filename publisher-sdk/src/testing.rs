//! Test support (feature `testing`): a real `redis-server` on a free loopback port with a
//! data directory of its own, stopped when dropped. Used by this workspace's tests and
//! usable by workers' own test suites. Needs `redis-server` on the `PATH` (Debian's
//! `redis-server` package; `make test` installs it).
//!
//! TLS: [`TestCa`] is a certificate authority made for one test (rcgen), which issues
//! certificates for `127.0.0.1`/`localhost`; [`RedisServer::start_tls`] and
//! [`RedisCluster::start_tls`] serve Redis over TLS only (`--tls-port`, `--port 0`) with a
//! certificate of that CA.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long a started server may take to answer `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A certificate authority made for one test, its files in a directory of its own
/// (removed when dropped).
pub struct TestCa {
    dir: PathBuf,
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

/// A certificate issued by a [`TestCa`] and its private key: PEM text and files.
#[derive(Clone, Debug)]
pub struct TestCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl TestCa {
    /// A new CA named `name` (its common name).
    pub fn new(name: &str) -> TestCa {
        let dir =
            std::env::temp_dir().join(format!("sse-ca-{}-{:x}", std::process::id(), rand_u64()));
        std::fs::create_dir_all(&dir).expect("create the CA directory");
        let mut params = rcgen::CertificateParams::default();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("generate the CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-sign the CA");
        let ca = TestCa { dir, issuer };
        std::fs::write(ca.cert_file(), ca.cert_pem()).expect("write the CA certificate");
        ca
    }

    /// The CA's certificate (PEM): what a client trusts.
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// The file holding [`TestCa::cert_pem`].
    pub fn cert_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A certificate for `127.0.0.1` and `localhost` (usable by a server and a client),
    /// written to `<name>.pem` and `<name>.key` in the CA's directory.
    pub fn issue(&self, name: &str) -> TestCert {
        self.issue_for(name, &["127.0.0.1", "localhost"])
    }

    /// A certificate for these names (DNS names or IP addresses).
    pub fn issue_for(&self, name: &str, names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).expect("valid names");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().expect("generate a key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("sign the certificate");
        let issued = TestCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_file: self.dir.join(format!("{name}.pem")),
            key_file: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert_file, &issued.cert_pem).expect("write the certificate");
        std::fs::write(&issued.key_file, &issued.key_pem).expect("write the key");
        issued
    }

    /// The TLS settings a client of a server with this CA's certificate needs.
    pub fn client_tls(&self) -> crate::RedisTls {
        crate::RedisTls::default().ca_pem(self.cert_pem())
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A server's TLS: its files, copied into its data directory (so a restart finds them
/// whatever became of the [`TestCa`]), and what its clients use.
struct ServerTls {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    /// A client certificate of the same CA (for servers that require one).
    client_cert_file: PathBuf,
    client_key_file: PathBuf,
    client: crate::RedisTls,
}

/// A `redis-server` child process.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    tls: Option<ServerTls>,
}

impl RedisServer {
    /// Starts a server with AOF on (so a restart keeps the data).
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--maxmemory", "1mb"]`).
    pub fn start_with(extra: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port(), extra)
    }

    /// [`RedisServer::start_with`] on a given port (see [`free_port`]).
    pub fn start_on(port: u16, extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(port, extra, None)
    }

    /// A server that speaks TLS only (`--tls-port`, `--port 0`), with a certificate of `ca`
    /// for `127.0.0.1`; client certificates are asked for but optional (`extra` may say
    /// `--tls-auth-clients yes`). Its [`RedisServer::url`] is `rediss://…`.
    pub fn start_tls(ca: &TestCa, extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(free_port(), extra, Some(ca))
    }

    /// [`RedisServer::start_tls`] on a given port.
    pub fn start_tls_on(port: u16, ca: &TestCa, extra: &[&str]) -> RedisServer {
        RedisServer::start_inner(port, extra, Some(ca))
    }

    fn start_inner(port: u16, extra: &[&str], ca: Option<&TestCa>) -> RedisServer {
        let dir =
            std::env::temp_dir().join(format!("sse-redis-{}-{:x}", std::process::id(), rand_u64()));
        std::fs::create_dir_all(&dir).expect("create the redis data directory");
        let tls = ca.map(|ca| {
            let server = ca.issue(&format!("redis-{port}"));
            let client = ca.issue(&format!("redis-client-{port}"));
            let copy = |name: &str, pem: &str| {
                let path = dir.join(name);
                std::fs::write(&path, pem).expect("write a TLS file");
                path
            };
            ServerTls {
                ca_file: copy("ca.pem", &ca.cert_pem()),
                cert_file: copy("server.pem", &server.cert_pem),
                key_file: copy("server.key", &server.key_pem),
                client_cert_file: copy("client.pem", &client.cert_pem),
                client_key_file: copy("client.key", &client.key_pem),
                client: ca
                    .client_tls()
                    .client_pem(client.cert_pem.clone(), client.key_pem.clone()),
            }
        });
        let mut server = RedisServer {
            child: None,
            port,
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            tls,
        };
        server.spawn();
        server
    }

    /// The ports and TLS files: `--port P`, or `--port 0 --tls-port P` and the files.
    fn port_args(&self) -> Vec<String> {
        let port = self.port.to_string();
        match &self.tls {
            None => vec!["--port".into(), port],
            Some(tls) => {
                let path = |p: &PathBuf| p.display().to_string();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    path(&tls.cert_file),
                    "--tls-key-file".into(),
                    path(&tls.key_file),
                    "--tls-ca-cert-file".into(),
                    path(&tls.ca_file),
                    "--tls-auth-clients".into(),
                    "optional".into(),
                ]
            }
        }
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(self.port_args())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--dir")
            .arg(&self.dir)
            .arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg("always")
            .arg("--save")
            .arg("")
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed? `make test` installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "redis-server on port {} did not answer PING within {START_TIMEOUT:?}",
            self.port
        );
    }

    fn ping(&self) -> bool {
        self.client()
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// A client of this server (with the CA and a client certificate, over TLS).
    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.tls {
            None => redis::Client::open(self.url()),
            Some(tls) => sse_wire::store::client(&self.url(), &tls.client),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>`, or `rediss://…` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// What a client of this TLS server needs: the CA (no client certificate). `None` for a
    /// plain server.
    pub fn client_tls(&self) -> Option<crate::RedisTls> {
        self.tls.as_ref().map(|tls| {
            crate::RedisTls::default()
                .ca_pem(std::fs::read(&tls.ca_file).expect("read the CA file"))
        })
    }

    /// `redis-cli` arguments for this server's TLS (none for a plain server).
    pub fn cli_tls_args(&self) -> Vec<String> {
        match &self.tls {
            None => Vec::new(),
            Some(tls) => {
                let path = |p: &PathBuf| p.display().to_string();
                vec![
                    "--tls".into(),
                    "--cacert".into(),
                    path(&tls.ca_file),
                    "--cert".into(),
                    path(&tls.client_cert_file),
                    "--key".into(),
                    path(&tls.client_key_file),
                ]
            }
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A blocking connection, for assertions on keys and for fault injection.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
            .expect("connect to the test redis-server")
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command
            .query(&mut self.connection())
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Stops the server (SIGKILL: no final save; AOF with `always` fsync keeps every write).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data directory (the AOF is reloaded).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port that was free a moment ago, outside the ephemeral range when it can be.
pub fn free_port() -> u16 {
    // Below the kernel's ephemeral range, so that no outgoing connection can be given
    // this port while a test restarts the server that owns it; `port + 10000` (a cluster
    // node's bus port) below it too.
    const LOWEST: u32 = 12_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let top = ephemeral_low.saturating_sub(10_000);
    if top > LOWEST + 1_000 {
        for _ in 0..1_000 {
            let port = (LOWEST + (rand_u64() % u64::from(top - LOWEST)) as u32) as u16;
            let bindable = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
            if bindable(port) && bindable(port + 10_000) {
                return port;
            }
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("find a free loopback port")
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

/// A Redis Cluster of real `redis-server` processes (`--cluster-enabled yes`), created
/// with `redis-cli --cluster create`, each node on a free port with its own directory;
/// every node is stopped when dropped.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// The port each node announces to clients (its own unless started announced).
    announced: Vec<u16>,
    /// Whether the nodes speak TLS (to clients and among themselves).
    tls: bool,
}

impl RedisCluster {
    /// `masters` masters with `replicas` replicas each; fails over after 1 s of silence.
    pub fn start(masters: usize, replicas: usize) -> RedisCluster {
        RedisCluster::start_announced(masters, replicas, |port| port)
    }

    /// As [`RedisCluster::start`], but each node tells clients to reach it at the port
    /// `announce(its own port)` (`cluster-announce-port`), e.g. a proxy in front of it
    /// that the caller runs; the cluster bus stays on the node's own port + 10000.
    pub fn start_announced(
        masters: usize,
        replicas: usize,
        announce: impl FnMut(u16) -> u16,
    ) -> RedisCluster {
        RedisCluster::start_inner(masters, replicas, announce, None)
    }

    /// As [`RedisCluster::start`], every node speaking TLS only, to clients and on the
    /// cluster bus and replication links (`--tls-cluster`, `--tls-replication`), with
    /// certificates of `ca`. [`RedisCluster::seeds`] are then `rediss://127.0.0.1:<port>`.
    pub fn start_tls(masters: usize, replicas: usize, ca: &TestCa) -> RedisCluster {
        RedisCluster::start_inner(masters, replicas, |port| port, Some(ca))
    }

    fn start_inner(
        masters: usize,
        replicas: usize,
        mut announce: impl FnMut(u16) -> u16,
        ca: Option<&TestCa>,
    ) -> RedisCluster {
        let mut announced = Vec::new();
        let nodes: Vec<RedisServer> = (0..masters * (1 + replicas))
            .map(|_| {
                let port = free_port();
                let public = announce(port);
                announced.push(public);
                let (public, bus) = (public.to_string(), (port + 10_000).to_string());
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    "--cluster-announce-ip",
                    "127.0.0.1",
                    "--cluster-announce-port",
                    &public,
                    "--cluster-announce-bus-port",
                    &bus,
                ];
                match ca {
                    None => RedisServer::start_on(port, &args),
                    Some(ca) => {
                        // With `--port 0` the bus port is not derived from a plain port:
                        // name it.
                        args.extend([
                            "--tls-cluster",
                            "yes",
                            "--tls-replication",
                            "yes",
                            "--cluster-port",
                            &bus,
                        ]);
                        RedisServer::start_tls_on(port, ca, &args)
                    }
                }
            })
            .collect();
        let mut create = Command::new("redis-cli");
        create.args(nodes[0].cli_tls_args());
        create.arg("--cluster").arg("create");
        for node in &nodes {
            create.arg(format!("127.0.0.1:{}", node.port()));
        }
        let output = create
            .arg("--cluster-replicas")
            .arg(replicas.to_string())
            .arg("--cluster-yes")
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            output.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = RedisCluster {
            nodes,
            announced,
            tls: ca.is_some(),
        };
        cluster.wait_healthy(Duration::from_secs(20));
        cluster
    }

    /// Waits until every node reports `cluster_state:ok`, all slots are served, and every
    /// replica is in sync with its master (a replica that never synced cannot take over).
    pub fn wait_healthy(&self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let healthy = self.nodes.iter().filter(|n| n.pid().is_some()).all(|node| {
                let info: String = node.cmd(&["CLUSTER", "INFO"]);
                let replication: String = node.cmd(&["INFO", "replication"]);
                let synced = !replication.contains("role:slave")
                    || replication.contains("master_link_status:up");
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && synced
            });
            if healthy {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not become healthy within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `host:port` of every node as clients reach it, for `--redis-cluster`
    /// (`rediss://host:port` for a TLS cluster).
    pub fn seeds(&self) -> Vec<String> {
        let scheme = if self.tls { "rediss://" } else { "" };
        self.announced
            .iter()
            .map(|port| format!("{scheme}127.0.0.1:{port}"))
            .collect()
    }

    /// What a client of this TLS cluster needs (the CA); `None` for a plain cluster.
    pub fn client_tls(&self) -> Option<crate::RedisTls> {
        self.nodes[0].client_tls()
    }

    /// The node (index) that serves `slot` as master right now.
    pub fn master_of(&self, slot: u16) -> usize {
        let live = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a live node");
        let slots: Vec<redis::Value> = live.cmd(&["CLUSTER", "SLOTS"]);
        for entry in slots {
            let redis::Value::Array(fields) = entry else {
                continue;
            };
            let (
                Some(redis::Value::Int(start)),
                Some(redis::Value::Int(end)),
                Some(redis::Value::Array(master)),
            ) = (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            if (*start..=*end).contains(&i64::from(slot)) {
                let Some(redis::Value::Int(port)) = master.get(1) else {
                    continue;
                };
                return self
                    .announced
                    .iter()
                    .position(|announced| i64::from(*announced) == *port)
                    .expect("a known node");
            }
        }
        panic!("no master serves slot {slot}");
    }

    /// The hash slot of a key, as the cluster computes it.
    pub fn slot(&self, key: &str) -> u16 {
        let live = self
            .nodes
            .iter()
            .find(|n| n.pid().is_some())
            .expect("a live node");
        live.cmd(&["CLUSTER", "KEYSLOT", key])
    }

    /// Node `index` (for commands of its own, e.g. `CLUSTER SETSLOT`).
    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// Moves `slot` and its keys from its master to node `to` (a master), as
    /// `redis-cli --cluster reshard` does: IMPORTING/MIGRATING, `MIGRATE` the keys, then
    /// `SETSLOT NODE` everywhere.
    pub fn move_slot(&self, slot: u16, to: usize) {
        let from = self.master_of(slot);
        assert_ne!(from, to, "slot {slot} is already on node {to}");
        let id = |i: usize| -> String { self.nodes[i].cmd(&["CLUSTER", "MYID"]) };
        let (from_id, to_id) = (id(from), id(to));
        let slot_text = slot.to_string();
        let _: () = self.nodes[to].cmd(&["CLUSTER", "SETSLOT", &slot_text, "IMPORTING", &from_id]);
        let _: () = self.nodes[from].cmd(&["CLUSTER", "SETSLOT", &slot_text, "MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> =
                self.nodes[from].cmd(&["CLUSTER", "GETKEYSINSLOT", &slot_text, "100"]);
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port().to_string();
            let mut args = vec![
                "MIGRATE",
                "127.0.0.1",
                port.as_str(),
                "",
                "0",
                "5000",
                "KEYS",
            ];
            args.extend(keys.iter().map(String::as_str));
            let _: () = self.nodes[from].cmd(&args);
        }
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            let _: () = node.cmd(&["CLUSTER", "SETSLOT", &slot_text, "NODE", &to_id]);
        }
    }

    /// Kills node `index` (SIGKILL): its replica takes over after the node timeout.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].stop();
    }
}
