//! What the dashboard shows and how keys change it: the process list, the selection, the filter,
//! the selected process's history and log tail. No terminal and no I/O here: keys come in, and
//! `Effect`s (requests for the daemon) come out, so this is testable on its own.

use crate::api::{Action, History, ProcessInfo};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use std::collections::VecDeque;

/// Log lines kept for the selected process.
pub const LOG_KEEP: usize = 500;

/// What a key asks the outside world to do.
#[derive(Debug, PartialEq)]
pub enum Effect {
    None,
    Quit,
    /// Run an action on one process id.
    Act(Action, u32, String),
    /// The selection moved: fetch history and logs for this id.
    Selected(u32),
}

pub struct LogEntry {
    pub err: bool,
    pub text: String,
}

#[derive(Default)]
pub struct State {
    pub procs: Vec<ProcessInfo>,
    /// The selected process id (kept across refreshes and filter changes).
    pub selected: Option<u32>,
    pub filter: String,
    /// Typing a filter after `/`.
    pub editing: bool,
    pub history: Option<History>,
    pub logs: VecDeque<LogEntry>,
    /// The last message (an action done, an error), shown above the footer.
    pub message: String,
    /// The daemon stopped answering: shown instead of stale figures.
    pub error: Option<String>,
}

impl State {
    /// The processes that match the filter (name contains it, case-insensitive).
    pub fn visible(&self) -> Vec<&ProcessInfo> {
        let f = self.filter.to_lowercase();
        self.procs
            .iter()
            .filter(|p| f.is_empty() || p.name.to_lowercase().contains(&f))
            .collect()
    }

    pub fn selected_info(&self) -> Option<&ProcessInfo> {
        self.selected
            .and_then(|id| self.procs.iter().find(|p| p.id == id))
    }

    /// Index of the selection in the visible list.
    pub fn selected_index(&self) -> Option<usize> {
        let id = self.selected?;
        self.visible().iter().position(|p| p.id == id)
    }

    /// New process list from the daemon; keeps the selection valid. Returns a new selection, if any.
    pub fn set_procs(&mut self, procs: Vec<ProcessInfo>) -> Option<u32> {
        self.procs = procs;
        self.error = None;
        self.fix_selection()
    }

    /// Makes the selection a visible process (the first one when it vanished).
    fn fix_selection(&mut self) -> Option<u32> {
        let visible: Vec<u32> = self.visible().iter().map(|p| p.id).collect();
        match self.selected {
            Some(id) if visible.contains(&id) => None,
            _ => {
                let new = visible.first().copied();
                if new != self.selected {
                    self.selected = new;
                    self.history = None;
                    self.logs.clear();
                    new
                } else {
                    None
                }
            }
        }
    }

    fn move_by(&mut self, delta: isize) -> Effect {
        let visible: Vec<u32> = self.visible().iter().map(|p| p.id).collect();
        if visible.is_empty() {
            return Effect::None;
        }
        let at = self.selected_index().unwrap_or(0) as isize;
        let to = (at + delta).clamp(0, visible.len() as isize - 1) as usize;
        if Some(visible[to]) == self.selected {
            return Effect::None;
        }
        self.selected = Some(visible[to]);
        self.history = None;
        self.logs.clear();
        Effect::Selected(visible[to])
    }

    pub fn push_log(&mut self, err: bool, text: String) {
        if self.logs.len() == LOG_KEEP {
            self.logs.pop_front();
        }
        self.logs.push_back(LogEntry { err, text });
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Effect {
        if key.kind == crossterm::event::KeyEventKind::Release {
            return Effect::None;
        }
        if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
            return Effect::Quit;
        }
        if self.editing {
            return self.on_filter_key(key);
        }
        let act = |s: &Self, a: Action| match s.selected_info() {
            Some(p) => Effect::Act(a, p.id, format!("{}:{}", p.name, p.instance)),
            None => Effect::None,
        };
        match key.code {
            KeyCode::Char('q') => Effect::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-10),
            KeyCode::PageDown => self.move_by(10),
            KeyCode::Home => self.move_by(isize::MIN / 2),
            KeyCode::End => self.move_by(isize::MAX / 2),
            KeyCode::Char('r') => act(self, Action::Restart),
            KeyCode::Char('R') => act(self, Action::Reload),
            KeyCode::Char('s') => act(self, Action::Stop),
            KeyCode::Char('/') => {
                self.editing = true;
                Effect::None
            }
            KeyCode::Esc if !self.filter.is_empty() => {
                self.filter.clear();
                self.after_filter()
            }
            _ => Effect::None,
        }
    }

    fn on_filter_key(&mut self, key: KeyEvent) -> Effect {
        match key.code {
            KeyCode::Enter => {
                self.editing = false;
                Effect::None
            }
            KeyCode::Esc => {
                self.editing = false;
                self.filter.clear();
                self.after_filter()
            }
            KeyCode::Backspace => {
                self.filter.pop();
                self.after_filter()
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => {
                self.filter.push(c);
                self.after_filter()
            }
            _ => Effect::None,
        }
    }

    fn after_filter(&mut self) -> Effect {
        match self.fix_selection() {
            Some(id) => Effect::Selected(id),
            None => Effect::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Status;

    fn proc(id: u32, name: &str) -> ProcessInfo {
        ProcessInfo {
            id,
            name: name.into(),
            instance: 0,
            pid: Some(100 + id as i32),
            status: Status::Online,
            restarts: 0,
            uptime_ms: 1000,
            cpu: 0.0,
            memory: 0,
            mode: "fork".into(),
            unstable_restarts: 0,
            restart_reasons: Default::default(),
            restart_reason: None,
            autoscale: None,
            ready: None,
        }
    }

    fn key(c: KeyCode) -> KeyEvent {
        KeyEvent::new(c, KeyModifiers::NONE)
    }

    #[test]
    fn selection_follows_keys_and_filter() {
        let mut s = State::default();
        assert_eq!(
            s.set_procs(vec![proc(0, "api"), proc(1, "worker"), proc(2, "apigw")]),
            Some(0)
        );
        assert_eq!(s.on_key(key(KeyCode::Char('j'))), Effect::Selected(1));
        assert_eq!(s.on_key(key(KeyCode::Down)), Effect::Selected(2));
        assert_eq!(s.on_key(key(KeyCode::Down)), Effect::None);
        assert_eq!(
            s.on_key(key(KeyCode::Char('r'))),
            Effect::Act(Action::Restart, 2, "apigw:0".into())
        );
        // Filter "work": the selection jumps to the only match; Esc clears it.
        s.on_key(key(KeyCode::Char('/')));
        for c in "work".chars() {
            s.on_key(key(KeyCode::Char(c)));
        }
        assert_eq!(s.selected, Some(1));
        assert_eq!(
            s.on_key(key(KeyCode::Char('q'))),
            Effect::None,
            "q is text while filtering"
        );
        assert_eq!(s.filter, "workq");
        s.on_key(key(KeyCode::Backspace));
        s.on_key(key(KeyCode::Enter));
        assert_eq!(s.visible().len(), 1);
        s.on_key(key(KeyCode::Esc));
        assert_eq!(s.visible().len(), 3);
        assert_eq!(s.on_key(key(KeyCode::Char('q'))), Effect::Quit);
    }

    #[test]
    fn vanished_selection_moves_to_first() {
        let mut s = State::default();
        s.set_procs(vec![proc(0, "a"), proc(1, "b")]);
        s.on_key(key(KeyCode::Down));
        assert_eq!(s.set_procs(vec![proc(0, "a")]), Some(0));
        assert_eq!(s.set_procs(vec![]), None);
        assert_eq!(s.selected, None);
    }
}
