//! The live views as a person sees them: `status --watch` and `demo` run in
//! a real pseudo-terminal (util-linux `script`) of 80 × 30, then 60 × 25
//! after a resize, and their output is replayed through a small terminal
//! model. However many times the view redraws, the screen holds one view,
//! with no line wider than the terminal and nothing left of earlier frames.

mod common;

use common::{Scratch, WorkerProc, gen_data, submit};
use std::process::Command;
use std::time::Duration;

/// Enough of a VT100 to replay what the views draw: printable text with
/// auto-wrap, CR, LF with scrolling, cursor up, home, erase below / screen
/// / line. `ESC ] 777 ; cols ; rows BEL` (sent by the test, never by
/// hourglass) resizes it, as the kernel resizes the pty.
struct Screen {
    cols: usize,
    rows: usize,
    grid: Vec<Vec<char>>,
    r: usize,
    c: usize,
    /// Lines that ran past the right edge (a line the view did not fit).
    wrapped: usize,
}

impl Screen {
    fn new(cols: usize, rows: usize) -> Self {
        Screen { cols, rows, grid: vec![vec![' '; cols]; rows], r: 0, c: 0, wrapped: 0 }
    }

    fn newline(&mut self) {
        if self.r + 1 == self.rows {
            self.grid.remove(0);
            self.grid.push(vec![' '; self.cols]);
        } else {
            self.r += 1;
        }
    }

    fn resize(&mut self, cols: usize, rows: usize) {
        // Like xterm: keep what fits, no reflow.
        let mut grid = vec![vec![' '; cols]; rows];
        for (i, line) in self.grid.iter().take(rows).enumerate() {
            for (j, ch) in line.iter().take(cols).enumerate() {
                grid[i][j] = *ch;
            }
        }
        (self.cols, self.rows, self.grid) = (cols, rows, grid);
        self.r = self.r.min(rows - 1);
        self.c = self.c.min(cols);
    }

    fn feed(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            match chars[i] {
                '\x1b' if chars.get(i + 1) == Some(&'[') => {
                    let start = i + 2;
                    let mut j = start;
                    while j < chars.len() && !chars[j].is_ascii_alphabetic() {
                        j += 1;
                    }
                    let params: String = chars[start..j].iter().collect();
                    let n: usize = params.parse().unwrap_or(1);
                    match chars.get(j) {
                        Some('A') => self.r = self.r.saturating_sub(n),
                        Some('H') => (self.r, self.c) = (0, 0),
                        Some('J') if params == "2" => self.grid.iter_mut().for_each(|l| l.fill(' ')),
                        Some('J') => {
                            self.grid[self.r][self.c.min(self.cols)..].fill(' ');
                            for line in &mut self.grid[self.r + 1..] {
                                line.fill(' ');
                            }
                        }
                        Some('K') => self.grid[self.r].fill(' '),
                        _ => {}
                    }
                    i = j + 1;
                }
                '\x1b' if chars.get(i + 1) == Some(&']') => {
                    let end = chars[i..].iter().position(|c| *c == '\x07').map(|p| i + p).unwrap_or(chars.len());
                    let osc: String = chars[i + 2..end].iter().collect();
                    if let Some(size) = osc.strip_prefix("777;") {
                        let (c, r) = size.split_once(';').unwrap();
                        self.resize(c.parse().unwrap(), r.parse().unwrap());
                    }
                    i = end + 1;
                }
                '\r' => {
                    self.c = 0;
                    i += 1;
                }
                '\n' => {
                    self.newline();
                    i += 1;
                }
                ch if ch.is_control() => i += 1,
                ch => {
                    if self.c == self.cols {
                        self.wrapped += 1;
                        self.c = 0;
                        self.newline();
                    }
                    self.grid[self.r][self.c] = ch;
                    self.c += 1;
                    i += 1;
                }
            }
        }
    }

    fn lines(&self) -> Vec<String> {
        self.grid.iter().map(|l| l.iter().collect::<String>().trim_end().to_string()).collect()
    }
}

/// Runs `command` in a pty of 80 × 30 (60 × 25 after `resize_after`),
/// returning everything it wrote to the terminal.
fn in_pty(command: &str, resize_after: Option<Duration>) -> String {
    let resize = match resize_after {
        Some(d) => format!("(sleep {}; stty cols 60 rows 25 </dev/tty; printf '\\033]777;60;25\\007') & ", d.as_secs()),
        None => String::new(),
    };
    let script = format!("stty cols 80 rows 30; {resize}{command}; wait");
    let out = Command::new("script").args(["-qfec", &script, "/dev/null"]).output().expect("running script(1)");
    assert!(
        out.status.success(),
        "{command}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout) + String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_one_clean_view(output: &str, what: &str, progress_lines: usize) -> Screen {
    let mut screen = Screen::new(80, 30);
    screen.feed(output);
    let lines = screen.lines();
    let text = lines.join("\n");
    assert_eq!(screen.wrapped, 0, "{what}: a line ran past the right edge:\n{text}");
    let bars = lines.iter().filter(|l| l.starts_with('[') && l.contains("shards")).count();
    assert_eq!(bars, progress_lines, "{what}: expected {progress_lines} progress line(s) on screen:\n{text}");
    screen
}

#[test]
fn status_watch_redraws_in_place_at_80_columns_and_after_a_resize() {
    let s = Scratch::new();
    gen_data(&s, 12_000, 3, "csv");
    assert!(submit(&s, &["--shard-size", "16KiB", "--deadline", "+1h"]).status.success());
    // A slow worker keeps the job running across many refreshes.
    let mut worker =
        WorkerProc::spawn(&s, &["--batch-size", "100", "--fault-batch-delay", "60ms", "--exit-when-idle", "1s"]);
    let bin = env!("CARGO_BIN_EXE_hourglass");
    let output = in_pty(&format!("{bin} status --watch {} --interval 300ms", s.output()), Some(Duration::from_secs(3)));
    worker.wait_exit(Duration::from_secs(120));
    let frames = output.matches("\x1b[J").count();
    assert!(frames >= 5, "only {frames} frames drawn; the job ended too soon to test redraws");
    let screen = assert_one_clean_view(&output, "status --watch", 1);
    assert_eq!((screen.cols, screen.rows), (60, 25), "the resize reached the terminal model");
    let lines = screen.lines();
    assert!(lines.iter().all(|l| l.chars().count() < 60), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("state    Succeeded")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.starts_with("shards   # done")), "the shard map is kept: {lines:#?}");
}

#[test]
fn demo_progress_stays_on_one_line_at_80_columns() {
    let s = Scratch::new();
    let bin = env!("CARGO_BIN_EXE_hourglass");
    let dir = s.s("demo");
    let output =
        in_pty(&format!("{bin} demo --rows 20000 --workers 1 --shard-size 64KiB --raw-rows 8192 --dir {dir}"), None);
    let screen = assert_one_clean_view(&output, "demo", 1);
    let lines = screen.lines();
    assert!(lines.iter().any(|l| l.starts_with("  verified")), "{lines:#?}");
}
