package policy

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// batchAudit is what one decision batch (one partition of one fetch
// response) did.
type batchAudit struct {
	first, last        int64
	delivered, dropped int
	failed             int
	counts
	// produce: the partition was refused (written: delivered records)
	refused bool
}

func (b *batchAudit) span(lo, hi int64) {
	if b.first < 0 || lo < b.first {
		b.first = lo
	}
	if hi > b.last {
		b.last = hi
	}
}

// AuditLine is one line of the audit log. It never holds a field value,
// key or header: only who, where, how many, and under which policy.
type AuditLine struct {
	Time          string `json:"time"`
	Operation     string `json:"operation"` // fetch or produce
	Principal     string `json:"principal"`
	Mechanism     string `json:"mechanism,omitempty"`
	ClientID      string `json:"client_id"`
	ClientAddress string `json:"client_address"`
	Listener      string `json:"listener"`
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	OffsetFirst   int64  `json:"offset_first"`
	OffsetLast    int64  `json:"offset_last"`
	Delivered     int    `json:"delivered"`
	Dropped       int    `json:"dropped"`
	Redacted      int    `json:"redacted"`
	Masked        int    `json:"masked"`
	Tokenized     int    `json:"tokenized"`
	LeftEncrypted int    `json:"left_encrypted"`
	FailedClosed  int    `json:"failed_closed"`
	// Refused (produce): the partition was answered POLICY_VIOLATION;
	// Delivered then counts the records decided before the refusal.
	Refused  bool   `json:"refused,omitempty"`
	Revision string `json:"policy_revision"`
}

type auditLog struct {
	mu sync.Mutex
	w  *bufio.Writer
	c  io.Closer
	// rotation (files only)
	path     string
	size     int64
	maxSize  int64
	maxFiles int
}

func openAudit(cfg *Audit) (*auditLog, error) {
	switch cfg.Output {
	case "stdout":
		return &auditLog{w: bufio.NewWriter(os.Stdout)}, nil
	case "stderr":
		return &auditLog{w: bufio.NewWriter(os.Stderr)}, nil
	}
	a := &auditLog{path: cfg.Output, maxSize: int64(cfg.MaxSizeMB) << 20, maxFiles: cfg.MaxFiles}
	if a.maxFiles == 0 {
		a.maxFiles = 5
	}
	if err := a.open(); err != nil {
		return nil, fmt.Errorf("audit.output: %v", err)
	}
	return a, nil
}

func (a *auditLog) open() error {
	f, err := os.OpenFile(a.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	a.w, a.c, a.size = bufio.NewWriter(f), f, fi.Size()
	return nil
}

// rotate shifts FILE.n to FILE.n+1 (the last is overwritten), FILE to
// FILE.1, and starts a new FILE.
func (a *auditLog) rotate() error {
	a.w.Flush()
	a.c.Close()
	for i := a.maxFiles - 1; i >= 1; i-- {
		os.Rename(fmt.Sprintf("%s.%d", a.path, i), fmt.Sprintf("%s.%d", a.path, i+1))
	}
	if err := os.Rename(a.path, a.path+".1"); err != nil {
		return err
	}
	return a.open()
}

func (a *auditLog) write(revision string, pc *partCtx, b *batchAudit) {
	l := AuditLine{
		Time:          time.Now().UTC().Format(time.RFC3339Nano),
		Operation:     pc.op,
		Principal:     pc.conn.Principal.String(),
		Mechanism:     pc.conn.Principal.Mechanism,
		ClientID:      pc.conn.ClientID,
		ClientAddress: pc.conn.ClientAddr,
		Listener:      pc.conn.Listener,
		Topic:         pc.topic,
		Partition:     pc.partition,
		OffsetFirst:   b.first,
		OffsetLast:    b.last,
		Delivered:     b.delivered,
		Dropped:       b.dropped,
		Redacted:      b.redacted,
		Masked:        b.masked,
		Tokenized:     b.tokenized,
		LeftEncrypted: b.encrypted,
		FailedClosed:  b.failed,
		Refused:       b.refused,
		Revision:      revision,
	}
	j, err := json.Marshal(&l)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.maxSize > 0 && a.size > 0 && a.size+int64(len(j))+1 > a.maxSize {
		if err := a.rotate(); err != nil {
			// Keep writing where we can: reopen the file as it is.
			if a.open() != nil {
				return
			}
		}
	}
	a.w.Write(j)
	a.w.WriteByte('\n')
	a.size += int64(len(j)) + 1
	a.w.Flush() // a line is never held back
}

func (a *auditLog) close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	err := a.w.Flush()
	if a.c != nil {
		if cerr := a.c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
