//go:build race

package proxy_test

// raceEnabled: the race detector changes what memory measurements mean.
const raceEnabled = true
