//! `ferrite demo`, the README's "run it" command, runs to the end and finds no lost write.

mod common;

#[test]
fn the_demo_loses_no_acknowledged_write() {
    let out = std::process::Command::new(common::bin()).args(["demo", "--seconds", "2"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ferrite demo failed:\n{text}");
    assert!(text.contains("every acknowledged write is on the new primary"), "{text}");
    assert!(text.contains("failover: epoch 2"), "{text}");
}
