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
	Revision      string `json:"policy_revision"`
}

type auditLog struct {
	mu sync.Mutex
	w  *bufio.Writer
	c  io.Closer
}

func openAudit(out string) (*auditLog, error) {
	switch out {
	case "stdout":
		return &auditLog{w: bufio.NewWriter(os.Stdout)}, nil
	case "stderr":
		return &auditLog{w: bufio.NewWriter(os.Stderr)}, nil
	}
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("audit.output: %v", err)
	}
	return &auditLog{w: bufio.NewWriter(f), c: f}, nil
}

func (a *auditLog) write(revision string, pc *partCtx, b *batchAudit) {
	l := AuditLine{
		Time:          time.Now().UTC().Format(time.RFC3339Nano),
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
		Revision:      revision,
	}
	j, err := json.Marshal(&l)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.w.Write(j)
	a.w.WriteByte('\n')
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
