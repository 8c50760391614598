//! `herald messages`, `herald export` and `herald erase` against an in-process
//! Herald: what they print and write, and their refusals.

use super::{FINISH, accepted_batch, app_sending_to, herald, send, write_csv};
use crate::helpers::ProviderServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_export_and_erase_find_write_and_forget_a_persons_messages() {
    let server = ProviderServer::start().await;
    let app = app_sending_to(&server).await;
    let csv = write_csv(
        &app,
        "two.csv",
        "to,ref\n+8613800000001,订单-1\n+8613800000002,o-2\n",
    );
    let batch = accepted_batch(&send(&app, "Hi", &csv, &[]).await);
    app.wait_finished(&batch, FINISH).await;

    let found = herald(
        &["messages", "--to", "+8613800000001", "--server", &app.url],
        &[],
    )
    .await;
    found.assert_succeeded();
    let lines: Vec<&str> = found.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", found.stdout);
    assert!(
        lines[0].contains(&format!("{batch}-0"))
            && lines[0].contains("sent")
            && lines[0].contains("ref 订单-1"),
        "{}",
        found.stdout
    );

    let file = app.dir.path().join("ledger.csv");
    let file_arg = file.display().to_string();
    let exported = herald(
        &["export", &batch, "-o", &file_arg, "--server", &app.url],
        &[],
    )
    .await;
    exported.assert_succeeded();
    let written = std::fs::read_to_string(&file).unwrap();
    let written = written.strip_prefix('\u{feff}').expect("a byte-order mark");
    let rows: Vec<&str> = written.trim_end().split("\r\n").collect();
    assert_eq!(rows.len(), 3, "{written}");
    assert!(
        rows[0].starts_with("id,batch_id,index,to,ref,state"),
        "{written}"
    );
    assert!(rows[1].contains(",订单-1,sent,"), "{written}");

    let searched = herald(&["export", "--ref", "订单-1", "--server", &app.url], &[]).await;
    searched.assert_succeeded();
    assert_eq!(
        searched.stdout.trim_end().split("\r\n").count(),
        2,
        "{}",
        searched.stdout
    );

    let erased = herald(&["erase", "+8613800000001", "--server", &app.url], &[]).await;
    erased.assert_succeeded();
    assert!(
        erased
            .stdout
            .starts_with("erased +8613800000001: 1 messages (0 cancelled), 0 replies"),
        "{}",
        erased.stdout
    );
    let after = herald(
        &["messages", "--to", "+8613800000001", "--server", &app.url],
        &[],
    )
    .await;
    assert_eq!(after.stdout, "no messages found\n");

    let refused = herald(&["erase", "nobody", "--server", &app.url], &[]).await;
    assert!(!refused.success, "{}", refused.stdout);
    assert!(refused.stderr.contains("address"), "{}", refused.stderr);
    let unnamed = herald(&["messages", "--server", &app.url], &[]).await;
    assert!(!unnamed.success, "{}", unnamed.stdout);
    assert!(unnamed.stderr.contains("--to"), "{}", unnamed.stderr);
}
