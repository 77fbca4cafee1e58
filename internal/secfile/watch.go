package secfile

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// maxWatched bounds a watched file: users files, credential files, JWKS.
const maxWatched = 16 << 20

// Watched is a parsed secret file, re-read when its size or modification
// time changes. A change that fails to load keeps the previous contents and
// is reported once through OnError.
type Watched[T any] struct {
	public  bool // no mode check (CRLs, JWKS)
	path    string
	parse   func([]byte) (T, error)
	onError func(error)

	mu      sync.Mutex
	val     T
	mtime   time.Time
	size    int64
	badSeen time.Time // mtime of the last version that failed, reported once
}

// WatchPublic is Watch for files that hold no secret (a JWKS): no mode check.
func WatchPublic[T any](path string, parse func([]byte) (T, error), onError func(error)) (*Watched[T], error) {
	return watch(path, parse, onError, true)
}

// Watch loads path now (an error is returned, nothing is kept) and returns
// a Watched that reloads it on change.
func Watch[T any](path string, parse func([]byte) (T, error), onError func(error)) (*Watched[T], error) {
	return watch(path, parse, onError, false)
}

func watch[T any](path string, parse func([]byte) (T, error), onError func(error), public bool) (*Watched[T], error) {
	w := &Watched[T]{path: path, parse: parse, onError: onError, public: public}
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	b, err := w.read()
	if err != nil {
		return nil, err
	}
	v, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	w.val, w.mtime, w.size = v, st.ModTime(), st.Size()
	return w, nil
}

// Get returns the current contents, reloading them first if the file changed
// (one stat per call).
func (w *Watched[T]) Get() T {
	w.mu.Lock()
	defer w.mu.Unlock()
	st, err := os.Stat(w.path)
	if err != nil || (st.ModTime().Equal(w.mtime) && st.Size() == w.size) {
		return w.val
	}
	if st.ModTime().Equal(w.badSeen) {
		return w.val
	}
	b, err := w.read()
	var v T
	if err == nil {
		v, err = w.parse(b)
		if err != nil {
			err = fmt.Errorf("%s: %w", w.path, err)
		}
	}
	if err != nil {
		w.badSeen = st.ModTime()
		if w.onError != nil {
			w.onError(fmt.Errorf("reload kept the previous version: %w", err))
		}
		return w.val
	}
	w.val, w.mtime, w.size = v, st.ModTime(), st.Size()
	return w.val
}

func (w *Watched[T]) read() ([]byte, error) {
	if w.public {
		return os.ReadFile(w.path)
	}
	return Read(w.path, maxWatched)
}
