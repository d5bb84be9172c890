//! The realtime bridge's image as scripts/realtime-image.sh builds it, run by Docker as ECS
//! runs it: the `realtime` binary alone in its container, configured by its environment, the
//! database on a mounted directory. On the host network it reaches a private Redis and the
//! fake DonationAlerts (API and Centrifugo websocket) on loopback; a donation the fake
//! pushes must end up in the database and on the event stream. Ignored by plain `cargo test`
//! (it needs Docker and the image); scripts/test.sh runs it in its Docker step.

use std::process::Command;
use std::time::{Duration, Instant};

use avatar_tests::streamers::link_streamer;
use avatar_tests::{ChildProcess, RedisServer, base_vars, output_within, wait_until};
use fake_providers::donationalerts::{FakeDonationAlerts, FakeDonationAlertsConfig, NewDonation};
use shared::app::App;
use shared::config::Config;

/// The tag scripts/realtime-image.sh gives by default.
const IMAGE: &str = "avatar-realtime:local";
/// How long one `docker` command may take.
const DOCKER_DEADLINE: Duration = Duration::from_secs(60);
/// How long the bridge may take from its start to the streamer's subscription: a container
/// start, a Redis lease, `/user/oauth`, the socket, `/centrifuge/subscribe`.
const SUBSCRIBE_DEADLINE: Duration = Duration::from_secs(60);
/// How long a pushed donation may take to reach SQLite and the stream (about a second is
/// the aim; a loaded machine gets slack, never a pass for a lost push).
const RECORD_DEADLINE: Duration = Duration::from_secs(30);

const TWITCH_ID: &str = "5001";
const DA_ID: i64 = 7_130_001;

/// A container started by `docker run --name …`, removed on drop (also when the test fails:
/// killing the `docker run` client would leave it running).
struct Container {
    name: String,
    client: ChildProcess,
}

impl Container {
    /// Every line the container printed so far (stdout and stderr), appended to `lines`.
    fn drain(&self, lines: &mut Vec<String>) {
        while let Some(line) = self.client.next_line(Duration::from_millis(5)) {
            lines.push(line);
        }
        while let Some(line) = self.client.try_log_line() {
            lines.push(line);
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = output_within(
            Command::new("docker").args(["rm", "--force", &self.name]),
            DOCKER_DEADLINE,
        );
    }
}

fn docker_ok(args: &[&str]) -> String {
    let output = output_within(Command::new("docker").args(args), DOCKER_DEADLINE);
    assert!(
        output.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
#[ignore = "needs Docker and scripts/realtime-image.sh; scripts/test.sh runs it"]
async fn the_image_built_by_the_script_records_a_pushed_donation() {
    avatar_tests::init_test_logging();
    let user = docker_ok(&["image", "inspect", "--format", "{{.Config.User}}", IMAGE]);
    assert_eq!(
        user, "1000:1000",
        "{IMAGE} runs as the EFS access point's user"
    );

    // Arrange: a private Redis and the fake DonationAlerts on loopback, a database in a
    // directory the container mounts where ECS mounts EFS, and a streamer linked in it with
    // a grant that allows subscribing to donations.
    let redis = RedisServer::start();
    let fake = FakeDonationAlerts::new(FakeDonationAlertsConfig::demo(
        "http://127.0.0.1:3000/auth/donationalerts/callback",
    ));
    let (fake_address, _fake_server) = fake.spawn(0).await.expect("fake DonationAlerts");
    let dir = tempfile::tempdir().expect("temp dir");
    let mut vars = base_vars(dir.path());
    vars.insert("SQLITE_JOURNAL_MODE".into(), "delete".into());
    vars.extend(fake.app_variables(fake_address));
    // This process only writes the link, without Redis: whatever reaches the stream was
    // published by the container.
    let app = App::build(Config::from_vars(&vars).expect("valid configuration"))
        .await
        .expect("app builds");
    // The default grant includes `oauth-donation-subscribe`, which the bridge needs.
    link_streamer(&app, &fake, TWITCH_ID, DA_ID).await;
    let database = app.store.path().to_owned();
    drop(app);

    // Act: the image, as ECS runs it (the same variables as the task definition's, the
    // database at /mnt/data), as this machine's user so the files stay ours.
    let name = format!(
        "avatar-realtime-test-{}-{}",
        std::process::id(),
        redis.port()
    );
    let mut command = Command::new("docker");
    command.args(["run", "--rm", "--name", &name, "--network", "host"]);
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    command.args(["--user", &format!("{uid}:{gid}")]);
    command.args(["--volume", &format!("{}:/mnt/data", dir.path().display())]);
    let mut container_vars = vars.clone();
    container_vars.insert("SQLITE_PATH".into(), "/mnt/data/data.sqlite".into());
    container_vars.insert("REDIS_URL".into(), redis.url());
    container_vars.insert("REDIS_REQUIRED".into(), "true".into());
    container_vars.insert("RUST_LOG".into(), "info".into());
    // Values through the client's environment (`-e NAME`), never its command line.
    for (key, value) in &container_vars {
        command.args(["--env", key]);
        command.env(key, value);
    }
    command.arg(IMAGE);
    let container = Container {
        name: name.clone(),
        client: ChildProcess::spawn_with_log(&mut command),
    };

    // The bridge subscribes to the streamer's channel...
    let mut lines = Vec::new();
    let started = Instant::now();
    loop {
        container.drain(&mut lines);
        let subscribed = lines.iter().any(|line| {
            line.contains("subscribed")
                && !line.contains("unsubscribed")
                && (line.contains(TWITCH_ID) || line.contains(&DA_ID.to_string()))
        });
        if subscribed {
            break;
        }
        assert!(
            started.elapsed() < SUBSCRIBE_DEADLINE,
            "the bridge did not log the streamer's subscription within {SUBSCRIBE_DEADLINE:?}; \
             its output:\n{}",
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // ...and a donation the fake pushes is recorded.
    let donation = fake.donate(NewDonation {
        da_user_id: Some(DA_ID),
        username: Some("docker_viewer".into()),
        message: "pushed into a container".into(),
        amount: serde_json::Number::from(150),
        currency: "RUB".into(),
        created_at: None,
    });

    // Assert: in SQLite (the file the container wrote, read here)...
    let stored = || {
        let conn = rusqlite::Connection::open(&database).ok()?;
        conn.query_row(
            "SELECT streamer_twitch_id, donor_name, message, amount, currency FROM donations \
             WHERE da_donation_id = ?1",
            [donation.id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            },
        )
        .ok()
    };
    wait_until("the pushed donation in SQLite", RECORD_DEADLINE, || async {
        stored().is_some()
    })
    .await;
    assert_eq!(
        stored().unwrap(),
        (
            TWITCH_ID.to_owned(),
            Some("docker_viewer".to_owned()),
            "pushed into a container".to_owned(),
            "150".to_owned(),
            "RUB".to_owned()
        )
    );
    // ...and once on the event stream, under its eventId.
    let event_id = format!("da:{DA_ID}:{}", donation.id);
    let events = || async {
        let mut conn = redis.connection().await;
        let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg("avatar:events")
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        entries
            .into_iter()
            .filter(|(_, fields)| fields.iter().any(|(k, v)| k == "eventId" && *v == event_id))
            .count()
    };
    wait_until(
        "the donation's event on avatar:events",
        RECORD_DEADLINE,
        || async { events().await >= 1 },
    )
    .await;
    assert_eq!(events().await, 1, "{event_id} published once");

    // SIGTERM, as ECS stops a task: the bridge exits 0.
    docker_ok(&["stop", "--time", "30", &name]);
    let mut client = container;
    let code = client.client.wait(DOCKER_DEADLINE);
    client.drain(&mut lines);
    assert_eq!(code, Some(0), "the bridge's output:\n{}", lines.join("\n"));
}
