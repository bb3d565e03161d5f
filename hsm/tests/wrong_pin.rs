//! A wrong PIN is refused and never shown.
//!
//! PKCS#11 login is per application: once any session of this process is logged in, a second
//! login answers USER_ALREADY_LOGGED_IN whatever the PIN. This test binary therefore makes its own
//! token and tries the wrong PIN first, before anything has logged in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use strongroom_hsm::*;

#[test]
fn wrong_pin_is_refused_and_never_shown() {
    let dir = common::make_token_dir("pin-test");
    strongroom_testkit::use_token_dir(dir.path());
    let module = common::module_path();
    let wrong = Pin::new("wrong-pin-0000");
    let err = Token::open_with_pin(&module, "pin-test", wrong.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::BadPin {
                rv: RvError::PinIncorrect
            }
        ),
        "{err:?}"
    );
    assert!(!err.to_string().contains("wrong-pin-0000"));
    assert!(!format!("{err:?}").contains("wrong-pin-0000"));
    // Refused once, never offered again: a real HSM locks the user after a few wrong PINs.
    assert!(wrong.was_refused());
    let again = Token::open_with_pin(&module, "pin-test", wrong.clone()).unwrap_err();
    assert!(matches!(again, Error::BadPin { .. }), "{again:?}");

    let token = Token::open_with_pin(&module, "pin-test", Pin::new(common::USER_PIN)).unwrap();
    assert!(!format!("{token:?}").contains(common::USER_PIN));
}
