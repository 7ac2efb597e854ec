//! `step-operator crd`: prints the CRDs, or writes `<name>.yaml` per CRD into directories.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::crd;

#[derive(clap::Args, Debug, Clone)]
pub struct CrdArgs {
    /// Write `<name>.yaml` files into these directories instead of printing to stdout.
    #[arg(long)]
    pub out_dir: Vec<PathBuf>,
}

pub fn run(args: &CrdArgs) -> anyhow::Result<()> {
    let crds = crd::all();
    if args.out_dir.is_empty() {
        for c in &crds {
            print!("{}", crd::to_yaml(c)?);
        }
        return Ok(());
    }
    for dir in &args.out_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        for c in &crds {
            let path = dir.join(crd::file_name(c));
            std::fs::write(&path, crd::to_yaml(c)?)
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}
