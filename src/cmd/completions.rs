//! `hourglass completions <shell>`: a completion script on stdout, e.g.
//! `hourglass completions bash > /etc/bash_completion.d/hourglass`.

use anyhow::Result;
use clap::Args;
use clap_complete::Shell;

#[derive(Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, elvish or powershell.
    shell: Shell,
}

pub fn run(a: CompletionsArgs, mut command: clap::Command) -> Result<()> {
    clap_complete::generate(a.shell, &mut command, "hourglass", &mut std::io::stdout());
    Ok(())
}
