// `sqlx::migrate!` embeds the migrations directory at compile time; without this, cargo would not
// rebuild the crate when a migration is added, and a binary built before would silently lack it.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
