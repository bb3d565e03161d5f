//! `strongroom-hsm-worker`: one HSM worker process of a signing pool in process mode.
//! Speaks the frame protocol of `strongroom_hsm::worker` on stdin/stdout; not for people.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    match strongroom_hsm::worker::serve_stdio() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strongroom-hsm-worker: {e}");
            ExitCode::FAILURE
        }
    }
}
