package seed

import (
	"bufio"
	"embed"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"

	"socnet/internal/social"
)

//go:embed data/*.txt
var dataFiles embed.FS

// idBase is the time of person 0 in the ids the loader derives: person i
// gets a UUIDv7 of idBase + i milliseconds, so the rows of a load are in id
// order and land at the right edge of the primary key index.
var idBase = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// Birthdates of generated people fall in [firstBirthdate, lastBirthdate].
var (
	firstBirthdate = time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)
	lastBirthdate  = time.Date(2008, 12, 31, 0, 0, 0, 0, time.UTC)
)

// shareWomen is the share of women among generated people (about Russia's).
const shareWomen = 0.54

// UserID returns the id of the person at index of a load keyed by seed: a
// UUIDv7 with timestamp idBase + index ms and random bits drawn from
// (seed, index). It never depends on batching, so a resumed load writes the
// same ids as an uninterrupted one.
func UserID(seed int64, index int) string {
	return userID(seed, index).String()
}

func userID(seed int64, index int) uuid.UUID {
	var id uuid.UUID
	ms := uint64(idBase.UnixMilli()) + uint64(index)
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], ms)
	copy(id[0:6], ts[2:8])
	a := mix64(uint64(seed) ^ mix64(uint64(index)+0x9e3779b97f4a7c15))
	b := mix64(a)
	binary.BigEndian.PutUint16(id[6:8], uint16(a)&0x0fff|0x7000)                  // version 7, rand_a
	binary.BigEndian.PutUint64(id[8:16], b&0x3fffffffffffffff|0x8000000000000000) // variant 10, rand_b
	return id
}

// mix64 is the SplitMix64 finalizer: a bijective scramble of x.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// Generator makes the deterministic people of one seed.
type Generator struct {
	seed int64
	t    *tables
	pcg  *rand.PCG
	rnd  *rand.Rand
}

// NewGenerator returns the generator of seed. Person(i) is the same for the
// same (seed, i) in every run, on every machine.
func NewGenerator(seed int64) (*Generator, error) {
	t, err := loadTables()
	if err != nil {
		return nil, err
	}
	pcg := rand.NewPCG(0, 0)
	return &Generator{seed: seed, t: t, pcg: pcg, rnd: rand.New(pcg)}, nil
}

// Person returns person index: a Russian name with its real frequency skew
// (the feminine surname for a woman), a birthdate in 1950-2008, a city
// weighted by population and a short biography, with its UserID.
func (g *Generator) Person(index int) social.User {
	g.pcg.Seed(mix64(uint64(g.seed)), mix64(uint64(index)^0x5851f42d4c957f2d))
	r := g.rnd
	t := g.t
	female := r.Float64() < shareWomen
	var first string
	surname := t.surnames.pick(r)
	if female {
		first = t.femaleNames.pick(r)
		surname = feminineSurname(surname)
	} else {
		first = t.maleNames.pick(r)
	}
	days := int(lastBirthdate.Sub(firstBirthdate).Hours()/24) + 1
	return social.User{
		ID:         UserID(g.seed, index),
		FirstName:  first,
		SecondName: surname,
		Birthdate:  firstBirthdate.AddDate(0, 0, r.IntN(days)),
		Biography:  t.biography(r, female),
		City:       t.cities.pick(r),
	}
}

// feminineSurname returns the form of a Russian surname a woman bears.
func feminineSurname(s string) string {
	switch {
	case strings.HasSuffix(s, "ов"), strings.HasSuffix(s, "ев"), strings.HasSuffix(s, "ёв"),
		strings.HasSuffix(s, "ин"), strings.HasSuffix(s, "ын"):
		return s + "а"
	case strings.HasSuffix(s, "ский"), strings.HasSuffix(s, "цкий"):
		return strings.TrimSuffix(s, "ий") + "ая"
	case strings.HasSuffix(s, "ой"), strings.HasSuffix(s, "ый"):
		return strings.TrimSuffix(strings.TrimSuffix(s, "ой"), "ый") + "ая"
	default: // -енко, -ых, -их, -ян, -ук, -ич and the like do not change
		return s
	}
}

// weighted picks strings with probability proportional to their weights.
type weighted struct {
	items []string
	cum   []int // cum[i] = sum of weights of items[0..i]
}

func (w *weighted) add(item string, weight int) {
	total := 0
	if len(w.cum) > 0 {
		total = w.cum[len(w.cum)-1]
	}
	w.items = append(w.items, item)
	w.cum = append(w.cum, total+weight)
}

func (w *weighted) pick(r *rand.Rand) string {
	x := r.IntN(w.cum[len(w.cum)-1])
	i, _ := slices.BinarySearch(w.cum, x+1)
	return w.items[i]
}

// tables are the embedded word lists.
type tables struct {
	maleNames, femaleNames, surnames, cities weighted
	// phrases by group: work, work.m, work.f, hobby, about
	phrases map[string][]string
}

var loadTables = sync.OnceValues(func() (*tables, error) {
	t := &tables{phrases: map[string][]string{}}
	for _, f := range []struct {
		name string
		into *weighted
	}{
		{"male_names.txt", &t.maleNames},
		{"female_names.txt", &t.femaleNames},
		{"surnames.txt", &t.surnames},
		{"cities.txt", &t.cities},
	} {
		if err := eachLine(f.name, func(line string) error {
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				return fmt.Errorf("want «word weight»")
			}
			w, err := strconv.Atoi(line[i+1:])
			if err != nil || w <= 0 {
				return fmt.Errorf("bad weight %q", line[i+1:])
			}
			if slices.Contains(f.into.items, line[:i]) {
				return fmt.Errorf("%q listed twice", line[:i])
			}
			f.into.add(line[:i], w)
			return nil
		}); err != nil {
			return nil, err
		}
		if len(f.into.items) == 0 {
			return nil, fmt.Errorf("seed data %s: empty", f.name)
		}
	}
	err := eachLine("bio_phrases.txt", func(line string) error {
		group, phrase, ok := strings.Cut(line, "|")
		if !ok {
			return fmt.Errorf("want «group|phrase»")
		}
		t.phrases[group] = append(t.phrases[group], phrase)
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, g := range []string{"work", "hobby", "about"} {
		if len(t.phrases[g]) == 0 {
			return nil, fmt.Errorf("seed data bio_phrases.txt: no %q phrases", g)
		}
	}
	return t, nil
})

// eachLine calls fn with every line of an embedded data file that is not
// blank or a # comment.
func eachLine(name string, fn func(string) error) error {
	f, err := dataFiles.Open("data/" + name)
	if err != nil {
		return fmt.Errorf("seed data: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("seed data %s:%d: %w", name, n, err)
		}
	}
	return sc.Err()
}

// biography joins a work phrase (most people), one or two different
// hobbies and sometimes a phrase about the person.
func (t *tables) biography(r *rand.Rand, female bool) string {
	parts := make([]string, 0, 4)
	if r.IntN(100) < 85 {
		own := t.phrases["work.m"]
		if female {
			own = t.phrases["work.f"]
		}
		general := t.phrases["work"]
		if i := r.IntN(len(general) + len(own)); i < len(general) {
			parts = append(parts, general[i])
		} else {
			parts = append(parts, own[i-len(general)])
		}
	}
	hobbies := t.phrases["hobby"]
	h := r.IntN(len(hobbies))
	parts = append(parts, hobbies[h])
	if len(hobbies) > 1 && r.IntN(2) == 0 {
		parts = append(parts, hobbies[(h+1+r.IntN(len(hobbies)-1))%len(hobbies)])
	}
	if r.IntN(100) < 40 {
		about := t.phrases["about"]
		parts = append(parts, about[r.IntN(len(about))])
	}
	return strings.Join(parts, " ")
}
