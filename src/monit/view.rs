//! Drawing the dashboard from a `State`: title, process table, cpu and memory charts of the
//! selected process, its log tail, and a footer with every key. Pure rendering into a ratatui frame.

use super::state::State;
use crate::api::{ProcessInfo, Status};
use ratatui::layout::{Constraint, Direction, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Sparkline, Table, TableState, Wrap};
use ratatui::Frame;

/// Below this the layout cannot show a row, the charts and a log line: a message is drawn instead.
pub const MIN_WIDTH: u16 = 60;
pub const MIN_HEIGHT: u16 = 16;

pub fn draw(f: &mut Frame, s: &State, daemon: &str) {
    let area = f.area();
    if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
        let msg = format!(
            "terminal too small: {}x{} (monit needs at least {MIN_WIDTH}x{MIN_HEIGHT}; enlarge the window, or use `cohort ls`). q quits.",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let visible = s.visible();
    // The table takes what it needs, up to 40% of the height; the detail pane gets the rest.
    let cap = (area.height * 2 / 5)
        .min(area.height.saturating_sub(13))
        .max(4);
    let table_h = (visible.len() as u16 + 3).clamp(4, cap);
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(1),
            Constraint::Length(table_h),
            Constraint::Length(7),
            Constraint::Min(3),
            Constraint::Length(1),
            Constraint::Length(1),
        ])
        .split(area);
    title(f, rows[0], s, daemon);
    table(f, rows[1], s, &visible);
    charts(f, rows[2], s);
    logs(f, rows[3], s);
    let msg = match &s.error {
        Some(e) => Line::from(Span::styled(
            format!(" {e}"),
            Style::default().fg(Color::Red),
        )),
        None => Line::from(Span::styled(
            format!(" {}", s.message),
            Style::default().fg(Color::Yellow),
        )),
    };
    f.render_widget(Paragraph::new(msg), rows[4]);
    footer(f, rows[5], s);
}

fn title(f: &mut Frame, area: Rect, s: &State, daemon: &str) {
    let online = s
        .procs
        .iter()
        .filter(|p| p.status == Status::Online)
        .count();
    let text = format!(
        " cohort monit │ {} processes, {} online │ {daemon}",
        s.procs.len(),
        online
    );
    f.render_widget(
        Paragraph::new(text).style(
            Style::default()
                .add_modifier(Modifier::BOLD)
                .fg(Color::Cyan),
        ),
        area,
    );
}

fn status_style(st: Status) -> Style {
    match st {
        Status::Online => Style::default().fg(Color::Green),
        Status::Errored => Style::default().fg(Color::Red),
        Status::Stopped => Style::default().fg(Color::DarkGray),
        _ => Style::default().fg(Color::Yellow),
    }
}

fn status_text(st: Status) -> &'static str {
    match st {
        Status::WaitingRestart => "waiting",
        other => other.as_str(),
    }
}

pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn human_uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn table(f: &mut Frame, area: Rect, s: &State, visible: &[&ProcessInfo]) {
    let header = Row::new([
        "id", "name", "inst", "mode", "status", "pid", "↺", "uptime", "cpu", "memory",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let rows = visible.iter().map(|p| {
        Row::new(vec![
            Cell::from(p.id.to_string()),
            Cell::from(p.name.clone()),
            Cell::from(p.instance.to_string()),
            Cell::from(p.mode.clone()),
            if p.status == Status::Online && p.ready == Some(false) {
                // Online but failing its readiness probe (or not listening yet).
                Cell::from("not ready").style(Style::default().fg(Color::Yellow))
            } else {
                Cell::from(status_text(p.status)).style(status_style(p.status))
            },
            Cell::from(p.pid.map(|x| x.to_string()).unwrap_or_else(|| "-".into())),
            Cell::from(p.restarts.to_string()),
            Cell::from(if p.uptime_ms > 0 {
                human_uptime(p.uptime_ms)
            } else {
                "-".into()
            }),
            Cell::from(format!("{:.1}%", p.cpu)),
            Cell::from(human_bytes(p.memory)),
        ])
    });
    let widths = [
        Constraint::Length(3),
        Constraint::Min(8),
        Constraint::Length(4),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(3),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(9),
    ];
    let title = if s.editing || !s.filter.is_empty() {
        format!(
            " processes │ filter: {}{} ",
            s.filter,
            if s.editing { "▏" } else { "" }
        )
    } else {
        " processes ".to_string()
    };
    let empty = visible.is_empty();
    let t = Table::new(rows, widths)
        .header(header)
        .block(Block::default().borders(Borders::ALL).title(title))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    let mut ts = TableState::default();
    ts.select(s.selected_index());
    f.render_stateful_widget(t, area, &mut ts);
    if empty {
        let inner = Rect {
            x: area.x + 2,
            y: area.y + 2,
            width: area.width.saturating_sub(4),
            height: 1,
        };
        let text = if s.procs.is_empty() {
            "no apps (start one with `cohort start app.js`)"
        } else {
            "no process matches the filter (Esc clears it)"
        };
        f.render_widget(
            Paragraph::new(text).style(Style::default().fg(Color::DarkGray)),
            inner,
        );
    }
}

fn charts(f: &mut Frame, area: Rect, s: &State) {
    let cols = Layout::default()
        .direction(Direction::Horizontal)
        .constraints([Constraint::Percentage(50), Constraint::Percentage(50)])
        .split(area);
    let sel = s.selected_info();
    let (cpu, mem): (Vec<u64>, Vec<u64>) = match &s.history {
        Some(h) => (
            h.cpu
                .iter()
                .map(|c| (c * 10.0).round().max(0.0) as u64)
                .collect(),
            h.memory.clone(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    let span = s
        .history
        .as_ref()
        .map(|h| h.interval_ms * h.cpu.len() as u64)
        .unwrap_or(0);
    let cpu_now = sel.map(|p| p.cpu).unwrap_or(0.0);
    let cpu_max = cpu.iter().copied().max().unwrap_or(0) as f64 / 10.0;
    let mem_now = sel.map(|p| p.memory).unwrap_or(0);
    let mem_max = mem.iter().copied().max().unwrap_or(0);
    let last = |v: &[u64], width: u16| -> Vec<u64> {
        let w = width.saturating_sub(2) as usize;
        v[v.len().saturating_sub(w)..].to_vec()
    };
    let cpu_data = last(&cpu, cols[0].width);
    let mem_data = last(&mem, cols[1].width);
    let cpu_title = format!(
        " cpu {cpu_now:.1}% │ max {cpu_max:.1}% │ {} ",
        human_uptime(span)
    );
    let mem_title = format!(
        " memory {} │ max {} ",
        human_bytes(mem_now),
        human_bytes(mem_max)
    );
    f.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(cpu_title))
            .data(&cpu_data)
            // A scale of at least 10% so an idle process shows a flat line, not noise.
            .max(cpu_data.iter().copied().max().unwrap_or(0).max(100))
            .style(Style::default().fg(Color::Green)),
        cols[0],
    );
    f.render_widget(
        Sparkline::default()
            .block(Block::default().borders(Borders::ALL).title(mem_title))
            .data(&mem_data)
            .style(Style::default().fg(Color::Magenta)),
        cols[1],
    );
}

fn logs(f: &mut Frame, area: Rect, s: &State) {
    let title = match s.selected_info() {
        Some(p) => format!(" logs {}:{} ", p.name, p.instance),
        None => " logs ".to_string(),
    };
    let h = area.height.saturating_sub(2) as usize;
    let lines: Vec<Line> = s
        .logs
        .iter()
        .skip(s.logs.len().saturating_sub(h))
        .map(|l| {
            let style = if l.err {
                Style::default().fg(Color::Red)
            } else {
                Style::default()
            };
            Line::from(Span::styled(l.text.clone(), style))
        })
        .collect();
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        area,
    );
}

fn footer(f: &mut Frame, area: Rect, s: &State) {
    let keys: &[(&str, &str)] = if s.editing {
        &[
            ("type", "filter"),
            ("Enter", "keep"),
            ("Esc", "clear"),
            ("Backspace", "erase"),
        ]
    } else {
        &[
            ("↑↓/jk", "select"),
            ("r", "restart"),
            ("R", "reload"),
            ("s", "stop"),
            ("/", "filter"),
            ("q", "quit"),
        ]
    };
    let mut spans = Vec::new();
    for (k, what) in keys {
        spans.push(Span::styled(
            format!(" {k} "),
            Style::default().add_modifier(Modifier::REVERSED),
        ));
        spans.push(Span::raw(format!(" {what}  ")));
    }
    f.render_widget(Paragraph::new(Line::from(spans)), area);
}
