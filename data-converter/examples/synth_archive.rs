//! Writes a synthetic 特定健診 archive of N persons: `cargo run --release --example synth_archive -- N DIR`.
//! The file is named like a real submission (`<機関番号>_<保険者番号>_<日付><N>_1.zip`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().unwrap_or_else(|| "100000".into()).parse()?;
    let dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{}.zip", data_converter::synth::archive_name()));
    let f = std::io::BufWriter::new(std::fs::File::create(&path)?);
    data_converter::synth::write_archive(f, n)?;
    println!("{}", path.display());
    Ok(())
}
