// Command crondiff answers, for cron cases read as JSON lines on stdin, what Kubernetes makes
// of them: whether the API server accepts a CronJob's schedule and timeZone, when
// github.com/robfig/cron/v3 (the library the CronJob controller uses) fires, and which run the
// controller makes after missed ones. One JSON line out per line in, in order.
//
// It is the oracle of tests/unit/test_cron_differential.py; it is not part of the operator.
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"
	_ "time/tzdata" // as kube-apiserver and kube-controller-manager: zones without a system copy

	"github.com/robfig/cron/v3"
)

type request struct {
	Expr     string  `json:"expr"`
	Zone     *string `json:"zone"`
	Start    int64   `json:"start"`    // unix seconds the runs are counted from
	Runs     int     `json:"runs"`     // how many successive Next results to return
	Now      int64   `json:"now"`      // the missed-run question: the latest run in (start, now]
	Deadline *int64  `json:"deadline"` // startingDeadlineSeconds
}

type response struct {
	ScheduleError string     `json:"scheduleError,omitempty"`
	ZoneError     string     `json:"zoneError,omitempty"`
	Bits          []uint64   `json:"bits,omitempty"`  // minute, hour, dom, month, dow
	Every         int64      `json:"every,omitempty"` // seconds, for @every
	Runs          []int64    `json:"runs"`
	Recent        *int64     `json:"recent"`
	Missed        int64      `json:"missed"`
	RecentError   string     `json:"recentError,omitempty"`
	Transitions   [][3]int64 `json:"transitions"`       // instant, offset before, offset after
	Endless       bool       `json:"endless,omitempty"` // a Next call did not return
}

// errEndless: robfig's search does not end for some days whose midnight a zone skips.
var errEndless = errors.New("Next did not return")

// next is sched.Next, given up on after a while (the goroutine is left spinning; such cases
// are rare and the process is short-lived).
func next(sched cron.Schedule, t time.Time) (time.Time, error) {
	done := make(chan time.Time, 1)
	go func() { done <- sched.Next(t) }()
	select {
	case found := <-done:
		return found, nil
	case <-time.After(2 * time.Second):
		return time.Time{}, errEndless
	}
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			fmt.Fprintln(os.Stderr, "bad request:", err)
			os.Exit(2)
		}
		line, _ := json.Marshal(answer(req))
		out.Write(append(line, '\n'))
		out.Flush() // a caller may wait for each answer
	}
}

func answer(req request) response {
	resp := response{Runs: []int64{}, Transitions: [][3]int64{}}
	resp.ScheduleError = validateSchedule(req.Expr)
	if req.Zone != nil {
		resp.ZoneError = validateZone(*req.Zone)
	}
	if resp.ScheduleError != "" || resp.ZoneError != "" {
		return resp
	}
	zone := "UTC"
	if req.Zone != nil {
		zone = *req.Zone
	}
	// The controller's own form: the zone prefixed to the schedule.
	sched, err := cron.ParseStandard(fmt.Sprintf("TZ=%s %s", zone, req.Expr))
	if err != nil {
		resp.ScheduleError = err.Error()
		return resp
	}
	switch s := sched.(type) {
	case *cron.SpecSchedule:
		resp.Bits = []uint64{s.Minute, s.Hour, s.Dom, s.Month, s.Dow}
	case cron.ConstantDelaySchedule:
		resp.Every = int64(s.Delay / time.Second)
	}
	t := time.Unix(req.Start, 0).UTC()
	last := t
	for i := 0; i < req.Runs; i++ {
		if t, err = next(sched, t); err != nil {
			resp.Endless = true
			return resp
		}
		if t.IsZero() {
			break
		}
		resp.Runs = append(resp.Runs, t.Unix())
		last = t
	}
	recent, missed, err := mostRecent(sched, time.Unix(req.Start, 0).UTC(), time.Unix(req.Now, 0).UTC(), req.Deadline)
	if errors.Is(err, errEndless) {
		resp.Endless = true
		return resp
	} else if err != nil {
		resp.RecentError = err.Error()
	} else if recent != nil {
		u := recent.Unix()
		resp.Recent = &u
	}
	resp.Missed = missed
	horizon := last
	if now := time.Unix(req.Now, 0); now.After(horizon) {
		horizon = now
	}
	loc, _ := time.LoadLocation(zone)
	resp.Transitions = transitions(loc, time.Unix(req.Start, 0), horizon)
	return resp
}

// validateSchedule is the API server's check of a new CronJob's schedule.
func validateSchedule(schedule string) (msg string) {
	if schedule == "" {
		return "required"
	}
	defer func() {
		if r := recover(); r != nil {
			msg = fmt.Sprintf("invalid schedule format: %v", r)
		}
	}()
	if _, err := cron.ParseStandard(schedule); err != nil {
		return err.Error()
	}
	if strings.Contains(schedule, "TZ") {
		return "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
	}
	return ""
}

var zoneComponent = regexp.MustCompile(`^[A-Za-z\.\-_0-9+]{1,14}$`)

// validateZone is the API server's check of a new CronJob's timeZone.
func validateZone(zone string) string {
	if zone == "" {
		return "timeZone must be nil or non-empty string"
	}
	for _, part := range strings.Split(zone, "/") {
		if part == "." || part == ".." || strings.HasPrefix(part, "-") || !zoneComponent.MatchString(part) {
			return "unknown time zone " + zone
		}
	}
	if strings.EqualFold(zone, "Local") {
		return "timeZone must be an explicit time zone"
	}
	if _, err := time.LoadLocation(zone); err != nil {
		return err.Error()
	}
	return ""
}

// mostRecent is the CronJob controller's missed-run rule (its mostRecentScheduleTime, with
// startingDeadlineSeconds): the run to make now, and its estimate of how many were due.
func mostRecent(sched cron.Schedule, earliest, now time.Time, deadline *int64) (*time.Time, int64, error) {
	if deadline != nil {
		if floor := now.Add(-time.Duration(*deadline) * time.Second); floor.After(earliest) {
			earliest = floor
		}
	}
	t1, err := next(sched, earliest)
	if err != nil {
		return nil, 0, err
	}
	t2, err := next(sched, t1)
	if err != nil {
		return nil, 0, err
	}
	if now.Before(t1) {
		return nil, 0, nil
	}
	if now.Before(t2) {
		return &t1, 0, nil
	}
	between := int64(t2.Sub(t1).Round(time.Second).Seconds())
	if between < 1 {
		return nil, 0, fmt.Errorf("time difference between two schedules is less than 1 second")
	}
	due := int64(now.Sub(t1).Seconds())/between + 1
	from := t1.Add(time.Duration((due-2)*between) * time.Second)
	var latest time.Time
	for t := from; ; {
		if t, err = next(sched, t); err != nil {
			return nil, 0, err
		}
		if t.IsZero() || t.After(now) {
			break
		}
		latest = t
	}
	if latest.IsZero() {
		return nil, due, nil
	}
	return &latest, due, nil
}

// transitions lists the zone's offset changes in (from, to].
func transitions(loc *time.Location, from, to time.Time) [][3]int64 {
	found := [][3]int64{}
	t := from.In(loc)
	for {
		_, end := t.ZoneBounds()
		if end.IsZero() || end.After(to) {
			return found
		}
		_, before := end.Add(-time.Second).Zone()
		_, after := end.Zone()
		if before != after {
			found = append(found, [3]int64{end.Unix(), int64(before), int64(after)})
		}
		if !end.After(t) {
			// Past a zone's last listed change Go answers from its rule a year at a time,
			// and may return the same year end again: step over it.
			end = t.Add(time.Second)
		}
		t = end
	}
}
