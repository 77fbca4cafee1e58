package awskms

import "github.com/strait-proxy/strait/config"

// Duration is a time.Duration written as a Go duration string ("5s") in
// config files; the one type every config block uses.
type Duration = config.Duration
