//! Write the fuzz targets' seed corpora: `DIR/<target>/<name>` for every
//! seed of `piazza::fuzzing::seeds` (valid STUN, DTLS, RTP, RTCP, control
//! messages, SDP offers, HTTP bodies). The committed `fuzz/seeds/` is its
//! output; run it again after changing the seeds:
//!
//! ```sh
//! rm -r fuzz/seeds && cargo run -p piazza --example fuzz_seeds -- fuzz/seeds
//! ```

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: fuzz_seeds DIR (writes DIR/<target>/<name>)");
        std::process::exit(2);
    };
    let seeds = piazza::fuzzing::seeds::all();
    for seed in &seeds {
        let target = dir.join(seed.target);
        std::fs::create_dir_all(&target)?;
        std::fs::write(target.join(&seed.name), &seed.data)?;
    }
    println!("{} seeds written under {}", seeds.len(), dir.display());
    Ok(())
}
