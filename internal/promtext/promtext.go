// Package promtext reads the Prometheus text format a strait process serves
// on /metrics, for tests that scrape the real binary.
package promtext

import (
	"bufio"
	"sort"
	"strconv"
	"strings"
)

// Samples maps each series ("name{labels}", or "name") to its value.
type Samples map[string]float64

// Parse reads body; comment lines, blank lines and values that do not parse
// are skipped, and a trailing timestamp is ignored.
func Parse(body string) Samples {
	s := Samples{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		// name{labels} value [timestamp]; the value follows the labels,
		// whose values may hold spaces.
		var series, rest string
		if i := strings.LastIndexByte(line, '}'); i >= 0 {
			series, rest = line[:i+1], line[i+1:]
		} else if i := strings.IndexByte(line, ' '); i >= 0 {
			series, rest = line[:i], line[i:]
		} else {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		s[series] = v
	}
	return s
}

// Series lists, sorted, the series of metric name whose labels contain every
// fragment in with (e.g. `result="error"`).
func (s Samples) Series(name string, with ...string) []string {
	var out []string
	for series := range s {
		n, labels := series, ""
		if i := strings.IndexByte(series, '{'); i >= 0 {
			n, labels = series[:i], series[i:]
		}
		if n != name {
			continue
		}
		ok := true
		for _, w := range with {
			ok = ok && strings.Contains(labels, w)
		}
		if ok {
			out = append(out, series)
		}
	}
	sort.Strings(out)
	return out
}

// Sum adds the values of Series(name, with...).
func (s Samples) Sum(name string, with ...string) float64 {
	var total float64
	for _, series := range s.Series(name, with...) {
		total += s[series]
	}
	return total
}

// Has reports whether metric name is exported at all.
func (s Samples) Has(name string) bool {
	for series := range s {
		if series == name || strings.HasPrefix(series, name+"{") {
			return true
		}
	}
	return false
}
