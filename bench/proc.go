package bench

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// clkTck is sysconf(_SC_CLK_TCK): 100 on every Linux architecture Go runs on
// (the kernel's USER_HZ), which is what /proc/PID/stat counts in.
const clkTck = 100

// ProcCPU returns the CPU time (user + system) process pid has used so far,
// from /proc/PID/stat.
func ProcCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read CPU time of pid %d: %w", pid, err)
	}
	ticks, err := parseStatCPU(b)
	if err != nil {
		return 0, fmt.Errorf("cannot parse /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ticks) * time.Second / clkTck, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15, in clock ticks) of a
// /proc/PID/stat line. The command name (field 2) is in parentheses and may
// hold spaces and parentheses itself, so fields are counted after the last ')'.
func parseStatCPU(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("no command name in %q", b)
	}
	// After ")" come fields 3 (state), 4, … ; utime is field 14.
	fields := bytes.Fields(b[i+1:])
	const utime = 14 - 3
	if len(fields) <= utime+1 {
		return 0, fmt.Errorf("only %d fields after the command name", len(fields))
	}
	u, err := strconv.ParseUint(string(fields[utime]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("utime: %w", err)
	}
	s, err := strconv.ParseUint(string(fields[utime+1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("stime: %w", err)
	}
	return u + s, nil
}

// ProcPeakRSS returns the peak resident set size (VmHWM) of process pid in
// bytes, from /proc/PID/status.
func ProcPeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("cannot read peak RSS of pid %d: %w", pid, err)
	}
	v, err := parseStatusKB(b, "VmHWM:")
	if err != nil {
		return 0, fmt.Errorf("cannot parse /proc/%d/status: %w", pid, err)
	}
	return v, nil
}

// parseStatusKB returns the value of a "Name:   123 kB" line in bytes.
func parseStatusKB(b []byte, name string) (int64, error) {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if !bytes.HasPrefix(line, []byte(name)) {
			continue
		}
		f := bytes.Fields(line[len(name):])
		if len(f) != 2 || string(f[1]) != "kB" {
			return 0, fmt.Errorf("unexpected %s line %q", name, line)
		}
		kb, err := strconv.ParseInt(string(f[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", name, err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no %s line", name)
}

// procSet samples a group of processes (a gateway may be several, as nginx's
// master and workers): CPU is summed, peak RSS is summed too, which is what
// the group holds at most when the peaks coincide.
type procSet []int

func (ps procSet) cpu() (time.Duration, error) {
	var sum time.Duration
	for _, pid := range ps {
		d, err := ProcCPU(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

func (ps procSet) peakRSS() (int64, error) {
	var sum int64
	for _, pid := range ps {
		v, err := ProcPeakRSS(pid)
		if err != nil {
			return 0, err
		}
		sum += v
	}
	return sum, nil
}

// MachineBusy returns the CPU time all CPUs spent busy (not idle, not waiting
// for I/O) since boot, from the first line of /proc/stat. Over a phase it
// shows whether something besides the bench's processes took CPU.
func MachineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("cannot read machine CPU time: %w", err)
	}
	ticks, err := parseProcStatBusy(b)
	if err != nil {
		return 0, fmt.Errorf("cannot parse /proc/stat: %w", err)
	}
	return time.Duration(ticks) * time.Second / clkTck, nil
}

// parseProcStatBusy sums the first "cpu" line's fields except idle (4th)
// and iowait (5th); guest time is already inside user time.
func parseProcStatBusy(b []byte) (uint64, error) {
	line := b
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		line = b[:i]
	}
	f := bytes.Fields(line)
	if len(f) < 8 || string(f[0]) != "cpu" {
		return 0, fmt.Errorf("unexpected first line %q", line)
	}
	var busy uint64
	for i, v := range f[1:] {
		if i >= 8 { // guest and guest_nice are counted in user and nice
			break
		}
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("field %d: %w", i+1, err)
		}
		if i == 3 || i == 4 {
			continue
		}
		busy += n
	}
	return busy, nil
}
