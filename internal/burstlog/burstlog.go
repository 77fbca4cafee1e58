// Package burstlog logs the first event of a burst and counts the rest, so
// that an outage or an attack is one log line every few seconds, not one per
// record or connection.
package burstlog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Every is how often a Logger lets a line through.
const Every = 10 * time.Second

// Logger is safe for concurrent use. A nil or zero Logger drops everything.
type Logger struct {
	Log        *slog.Logger
	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// New returns a Logger writing to log.
func New(log *slog.Logger) *Logger { return &Logger{Log: log} }

// Error logs at error level, at most once per Every.
func (b *Logger) Error(msg string, args ...any) { b.emit(slog.LevelError, msg, args) }

// Warn logs at warn level, at most once per Every.
func (b *Logger) Warn(msg string, args ...any) { b.emit(slog.LevelWarn, msg, args) }

func (b *Logger) emit(level slog.Level, msg string, args []any) {
	if b == nil {
		return
	}
	b.mu.Lock()
	now := time.Now()
	if b.Log == nil || !b.last.IsZero() && now.Sub(b.last) < Every {
		b.suppressed++
		b.mu.Unlock()
		return
	}
	n := b.suppressed
	b.last, b.suppressed = now, 0
	b.mu.Unlock()
	if n > 0 {
		args = append(args, "suppressed_since_last", n)
	}
	b.Log.Log(context.Background(), level, msg, args...)
}
