#!/usr/bin/python3
"""Loads deterministic demo data into a migrated elearn database.

    tools/demo-data.py [--small | --full] [--seed N] [--anchor YYYY-MM-DD]
                       [--dsn CONNINFO]

--small (default): 1,000 users, 2,000 courses.  --full: 50,000 users,
100,000 courses, ~300k enrollments, ~300k videos, and proportionate
progress, quizzes and submissions.  Every run empties the elearn tables
(TRUNCATE ... RESTART IDENTITY) and reloads them in one transaction, so
running it twice gives the same data, never duplicates.  Rows go in with
COPY from in-memory text built by a seeded RNG; nothing is inserted row by
row.  Timestamps are relative to --anchor (default: the first day of the
current UTC month), so the data is identical for a month and still looks
recent.

Fixed rows other tools and tests rely on:
  user 1  student@elearn.dev     / student-dev-pass     (student; enrolled
          in courses 2 and 3, deliberately NOT in course 1)
  user 2  instructor@elearn.dev  / instructor-dev-pass  (owns courses 1-10;
          course 10 is unpublished)
  user 3  admin@elearn.dev       / admin-dev-pass       (admin)
  course 1  published, 4 ready videos, 2 quizzes with questions of every
            type (single, multiple, truefalse, numeric, short, essay)
Other users are userN@example.com (N = user id) and share one Argon2id
hash of --user-password (default: a random-looking string derived from
the seed; pass your own to let a load test log in as demo users).

This is dev-only data with publicly known passwords: never run it against
a production database (it empties every elearn table first).
"""

import argparse
import datetime as dt
import io
import os
import queue
import random
import shutil
import subprocess
import sys
import threading
import time

import psycopg2

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PROFILES = {
    "small": {"users": 1000, "courses": 2000, "instructors": 80},
    "full": {"users": 50000, "courses": 100000, "instructors": 4000},
}
ENROLLMENTS_PER_USER = 6          # mean; ~300k for --full
VIDEOS_PER_COURSE = (2, 4)        # uniform: ~3 per course
QUIZ_COURSE_SHARE = 0.3
PUBLISHED_SHARE = 0.92
ARGON2 = ("-id", "-t", "2", "-k", "19456", "-p", "1", "-l", "32", "-e")

DEV_ACCOUNTS = [  # (user_id, email, password, display name, role)
    (1, "student@elearn.dev", "student-dev-pass", "Dev Student", "student"),
    (2, "instructor@elearn.dev", "instructor-dev-pass", "Dev Instructor",
     "instructor"),
    (3, "admin@elearn.dev", "admin-dev-pass", "Dev Admin", "admin"),
]
DEV_INSTRUCTOR_COURSES = range(1, 11)
DEV_UNPUBLISHED_COURSE = 10

# --- vocabulary ------------------------------------------------------------

CATEGORIES = {
    "programming": (
        ["Python", "JavaScript", "TypeScript", "Rust", "Go", "Java", "C",
         "C++", "Kotlin", "Swift", "SQL", "Haskell", "Ruby", "PHP", "Scala",
         "Elixir", "Bash Scripting", "Functional Programming"],
        ["data structures", "unit testing", "concurrency", "error handling",
         "performance tuning", "debugging", "packaging", "type systems",
         "memory management", "API design", "algorithms", "refactoring"]),
    "data-science": (
        ["Machine Learning", "Deep Learning", "Statistics",
         "Data Visualization", "pandas", "NumPy", "Time Series Analysis",
         "Natural Language Processing", "Computer Vision",
         "Bayesian Inference", "A/B Testing", "Feature Engineering",
         "Data Engineering", "Recommender Systems"],
        ["regression", "classification", "clustering", "model evaluation",
         "data cleaning", "exploratory analysis", "neural networks",
         "hypothesis testing", "dashboards", "feature selection",
         "gradient boosting", "dimensionality reduction"]),
    "web-development": (
        ["React", "Vue.js", "Django", "Flask", "Node.js", "HTML and CSS",
         "Web Accessibility", "GraphQL", "REST APIs", "Next.js",
         "Tailwind CSS", "WebAssembly", "Svelte", "Web Performance"],
        ["routing", "state management", "authentication", "forms",
         "responsive layouts", "server-side rendering", "caching",
         "deployment", "security headers", "component design", "testing",
         "progressive web apps"]),
    "devops": (
        ["Docker", "Kubernetes", "Terraform", "Ansible",
         "Linux Administration", "CI/CD Pipelines", "Prometheus Monitoring",
         "nginx", "PostgreSQL Administration",
         "Site Reliability Engineering", "Git", "Cloud Networking"],
        ["containers", "infrastructure as code", "observability",
         "incident response", "backups", "high availability", "networking",
         "secrets management", "capacity planning", "load balancing",
         "log aggregation", "zero-downtime deploys"]),
    "design": (
        ["UI Design", "UX Research", "Typography", "Figma", "Color Theory",
         "Illustration", "Motion Design", "Design Systems", "Logo Design",
         "Photography", "Product Design"],
        ["wireframing", "prototyping", "user interviews", "visual hierarchy",
         "grids", "accessibility", "branding", "composition", "lighting",
         "usability testing", "iconography"]),
    "business": (
        ["Project Management", "Agile and Scrum", "Accounting",
         "Marketing Strategy", "Negotiation", "Entrepreneurship",
         "Product Management", "Leadership", "Public Speaking", "Sales",
         "Financial Modeling", "Digital Marketing"],
        ["stakeholder management", "budgeting", "roadmaps", "pricing",
         "customer discovery", "team building", "presentations",
         "forecasting", "hiring", "market research", "growth metrics",
         "storytelling"]),
    "mathematics": (
        ["Calculus", "Linear Algebra", "Probability",
         "Discrete Mathematics", "Number Theory", "Differential Equations",
         "Geometry", "Graph Theory", "Optimization", "Real Analysis",
         "Abstract Algebra"],
        ["proofs", "limits", "matrices", "eigenvalues", "random variables",
         "combinatorics", "integrals", "vector spaces", "convexity",
         "series", "modular arithmetic"]),
    "languages": (
        ["Spanish", "German", "French", "Japanese", "Portuguese", "Italian",
         "Mandarin Chinese", "English Grammar", "Business English",
         "Korean", "Arabic"],
        ["pronunciation", "vocabulary", "conversation", "grammar",
         "listening", "reading comprehension", "writing", "idioms",
         "travel phrases", "business correspondence"]),
    "science": (
        ["Physics", "Chemistry", "Biology", "Astronomy", "Neuroscience",
         "Climate Science", "Genetics", "Organic Chemistry",
         "Quantum Mechanics", "Ecology", "Microbiology"],
        ["experiments", "lab techniques", "scientific method", "energy",
         "cells", "evolution", "thermodynamics", "reactions", "orbits",
         "ecosystems", "data analysis"]),
    "music": (
        ["Guitar", "Piano", "Music Theory", "Music Production",
         "Songwriting", "Jazz Improvisation", "Singing", "Ableton Live",
         "Drums", "Orchestration", "Mixing and Mastering"],
        ["chords", "scales", "rhythm", "ear training", "arrangement",
         "sound design", "harmony", "technique", "recording",
         "performance", "sight reading"]),
    "health": (
        ["Nutrition", "Yoga", "Mindfulness", "Strength Training",
         "First Aid", "Sleep Science", "Running", "Mental Health",
         "Pilates"],
        ["habits", "meal planning", "breathing", "mobility", "recovery",
         "stress management", "injury prevention", "endurance",
         "flexibility", "motivation"]),
    "personal-development": (
        ["Productivity", "Time Management", "Critical Thinking",
         "Speed Reading", "Memory Techniques", "Writing",
         "Creative Thinking", "Career Planning", "Emotional Intelligence"],
        ["goal setting", "focus", "note taking", "decision making",
         "habits", "journaling", "feedback", "networking", "resilience",
         "communication"]),
}
CATEGORY_NAMES = list(CATEGORIES)
CATEGORY_WEIGHTS = [18, 12, 12, 8, 7, 10, 6, 8, 6, 5, 4, 4]

LEVELS = ["beginner", "intermediate", "advanced"]
LEVEL_WEIGHTS = [50, 35, 15]

LANGUAGES = ["en", "es", "de", "fr", "pt", "ja", "it", "hi"]
LANGUAGE_WEIGHTS = [68, 9, 6, 6, 5, 3, 2, 1]
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "de": "German",
                  "fr": "French", "pt": "Portuguese", "ja": "Japanese",
                  "it": "Italian", "hi": "Hindi"}

TITLES = {
    "en": {
        "beginner": ["{t} for Beginners", "Introduction to {t}",
                     "{t} Fundamentals", "Getting Started with {t}",
                     "{t} 101", "Learn {t} from Scratch",
                     "The Complete {t} Beginner Course",
                     "{t} Basics: A Gentle Introduction"],
        "intermediate": ["Practical {t}", "{t} in Practice",
                         "Hands-On {t} Projects", "{t}: Beyond the Basics",
                         "Building Real Projects with {t}",
                         "{t} for {a}", "Effective {t}",
                         "{t} Bootcamp"],
        "advanced": ["Advanced {t}", "Mastering {t}", "{t} Deep Dive",
                     "Expert {t}: Patterns and Pitfalls", "{t} at Scale",
                     "{t} Internals", "Professional {t} Masterclass"],
    },
    "es": {"beginner": ["Introducción a {t}", "{t} para principiantes"],
           "intermediate": ["{t} práctico", "Proyectos reales con {t}"],
           "advanced": ["{t} avanzado", "Domina {t}"]},
    "de": {"beginner": ["Einführung in {t}", "{t} für Einsteiger"],
           "intermediate": ["Praxiskurs {t}", "{t} im Alltag"],
           "advanced": ["{t} für Fortgeschrittene", "{t} meistern"]},
    "fr": {"beginner": ["Introduction à {t}", "{t} pour débutants"],
           "intermediate": ["{t} en pratique", "Projets concrets en {t}"],
           "advanced": ["{t} avancé", "Maîtriser {t}"]},
    "pt": {"beginner": ["Introdução a {t}", "{t} para iniciantes"],
           "intermediate": ["{t} na prática", "Projetos com {t}"],
           "advanced": ["{t} avançado", "Domine {t}"]},
    "ja": {"beginner": ["{t}入門", "はじめての{t}"],
           "intermediate": ["実践{t}", "{t}ハンズオン"],
           "advanced": ["{t}上級講座", "{t}徹底解説"]},
    "it": {"beginner": ["Introduzione a {t}", "{t} per principianti"],
           "intermediate": ["{t} in pratica", "Progetti reali con {t}"],
           "advanced": ["{t} avanzato", "Padroneggiare {t}"]},
    "hi": {"beginner": ["{t} की शुरुआत", "{t} for Beginners (Hindi)"],
           "intermediate": ["{t} प्रैक्टिकल", "Practical {t} (Hindi)"],
           "advanced": ["एडवांस्ड {t}", "Advanced {t} (Hindi)"]},
}
AUDIENCES = ["Data Analysts", "Engineers", "Managers", "Students",
             "Designers", "Researchers", "Entrepreneurs", "Teachers",
             "Busy Professionals", "Career Changers"]
SUMMARIES = [
    "Learn {t} through {n} hands-on lessons and real-world exercises.",
    "A {lvl} course on {t}, from {s1} to {s2}.",
    "Build confidence with {t}: {s1}, {s2} and more.",
    "Everything you need to know about {s1} and {s2} in {t}.",
    "Go from zero to productive with {t} in {w} weeks.",
    "Understand {t} deeply, with a focus on {s1}.",
]
SENTENCES = [
    "You will start with the core ideas of {t} and move on to {s1} and {s2}.",
    "Each module ends with a short quiz and a practical exercise on {s1}.",
    "The course assumes {pre} and explains every step along the way.",
    "By the end you will be able to apply {t} to real problems involving "
    "{s2}.",
    "We cover common mistakes with {s1} and how experienced practitioners "
    "avoid them.",
    "Worked examples show how {s1} and {s2} fit together in practice.",
    "Your instructor has taught {t} to thousands of learners and works with "
    "it every day.",
    "Downloadable notes summarise {s2} so you can review quickly.",
    "A final project ties together {s1}, {s2} and {s3}.",
    "The pace suits {a} who can spare a few hours a week.",
    "Videos are short and focused, so you can learn {t} in small steps.",
    "Case studies from industry illustrate why {s3} matters.",
]
PREREQS = {"beginner": "no prior knowledge",
           "intermediate": "some familiarity with the basics",
           "advanced": "solid working experience"}
FIRST = ["Ana", "Ben", "Chloe", "David", "Elena", "Farid", "Grace", "Hiro",
         "Ines", "Jonas", "Keiko", "Liam", "Maria", "Noah", "Olga", "Pedro",
         "Quinn", "Rosa", "Sven", "Tara", "Uma", "Victor", "Wen", "Xavier",
         "Yara", "Zoe", "Amir", "Bea", "Carlos", "Dana", "Emil", "Fatima",
         "Gustav", "Hana", "Ivan", "Julia", "Kofi", "Lena", "Mateo", "Nia"]
LAST = ["Garcia", "Smith", "Müller", "Tanaka", "Rossi", "Dubois", "Silva",
        "Kowalski", "Nguyen", "Johansson", "Okafor", "Patel", "Kim",
        "Hernández", "Schmidt", "Ivanova", "Costa", "Haddad", "Novak",
        "Fischer", "Moreau", "Sato", "Brown", "Martin", "Lopez", "Wilson",
        "Jensen", "Ali", "Chen", "Yilmaz"]
VIDEO_TITLES = ["Welcome and course overview", "Setting up your environment",
                "Core concepts", "A first example", "Going further",
                "Common pitfalls", "Worked example", "Putting it together",
                "Project walkthrough", "Summary and next steps"]
RENDITIONS = ('[{"height": 720, "bandwidth": 2800000}, '
              '{"height": 360, "bandwidth": 800000}]')


# --- helpers -----------------------------------------------------------------

def esc(s):
    """One field of COPY's text format."""
    if s is None:
        return "\\N"
    if not isinstance(s, str):
        return str(s)
    if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
        s = (s.replace("\\", "\\\\").replace("\t", "\\t")
             .replace("\n", "\\n").replace("\r", "\\r"))
    return s


def ts(t):
    return "\\N" if t is None else t.isoformat()


def argon2_hash(password, salt):
    exe = shutil.which("argon2")
    if exe is None:
        sys.exit("demo-data: the argon2 command is missing; run tools/deps.sh "
                 "(Debian package argon2)")
    out = subprocess.run([exe, salt, *ARGON2], input=password.encode(),
                         capture_output=True, check=True)
    h = out.stdout.decode().strip()
    if not h.startswith("$argon2id$v=19$m=19456,t=2,p=1$"):
        sys.exit("demo-data: unexpected argon2 output %r" % h)
    return h


def default_dsn():
    if os.environ.get("ELEARN_PG_CONNINFO"):
        return os.environ["ELEARN_PG_CONNINFO"]
    if os.environ.get("PGHOST") or os.environ.get("PGPORT"):
        return ""   # libpq takes everything from PG*
    # Standalone: the same defaults as tools/stack.sh (config/elearn.env).
    out = subprocess.run(
        ["bash", "-c", 'ELEARN_TOP="$1"; . "$1/config/elearn.env"; '
                       'printf %s "$ELEARN_PG_CONNINFO"', "-", TOP],
        capture_output=True, check=True, text=True)
    return out.stdout


class Copier:
    """COPY helper: rows are lists of already-escaped fields."""

    def __init__(self, cur, freeze):
        self.cur = cur
        self.freeze = freeze
        self.counts = {}

    def copy(self, table, cols, lines, partitioned=False):
        buf = io.BytesIO(("\n".join(lines) + "\n").encode() if lines else b"")
        opts = " WITH (FREEZE)" if self.freeze and not partitioned else ""
        self.cur.copy_expert("COPY %s (%s) FROM STDIN%s"
                             % (table, ", ".join(cols), opts), buf)
        self.counts[table] = len(lines)


# --- generation --------------------------------------------------------------

class Demo:
    def __init__(self, profile, seed, anchor, user_password):
        self.p = PROFILES[profile]
        self.rng = random.Random(seed)
        self.anchor = anchor
        self.user_password = user_password or "demo-%016x" % \
            self.rng.getrandbits(64)

    def days_ago(self, lo, hi):
        """A time between hi and lo days before the anchor (lo < hi)."""
        return self.anchor - dt.timedelta(
            seconds=self.rng.uniform(lo * 86400, hi * 86400))

    def users(self):
        rng = self.rng
        n, n_instr = self.p["users"], self.p["instructors"]
        shared = argon2_hash(self.user_password, "%016x" % rng.getrandbits(64))
        lines = []
        created0 = self.anchor - dt.timedelta(days=1500)
        for uid, email, pw, name, role in DEV_ACCOUNTS:
            h = argon2_hash(pw, "%016x" % rng.getrandbits(64))
            lines.append("\t".join([str(uid), email, h, esc(name), role,
                                    ts(created0), ts(created0)]))
        # instructors right after the dev accounts, then students
        self.instructors = [2] + list(range(4, 4 + n_instr))
        for uid in range(4, n + 1):
            role = "instructor" if uid < 4 + n_instr else "student"
            name = "%s %s" % (rng.choice(FIRST), rng.choice(LAST))
            c = self.days_ago(1, 1400)
            lines.append("\t".join([str(uid), "user%d@example.com" % uid,
                                    shared, esc(name), role, ts(c), ts(c)]))
        self.n_users = n
        return ("users", ["user_id", "email", "password_hash",
                          "display_name", "role", "created_at",
                          "updated_at"], lines)

    def courses(self):
        rng = self.rng
        n = self.p["courses"]
        # a few prolific instructors, a long tail of occasional ones
        instr = self.instructors[1:]
        instr_w = [1.0 / (i + 1) ** 0.5 for i in range(len(instr))]
        cats = rng.choices(CATEGORY_NAMES, CATEGORY_WEIGHTS, k=n)
        levels = rng.choices(LEVELS, LEVEL_WEIGHTS, k=n)
        langs = rng.choices(LANGUAGES, LANGUAGE_WEIGHTS, k=n)
        owners = rng.choices(instr, instr_w, k=n)
        self.course_meta = {}
        rows = []
        for i in range(n):
            cid = i + 1
            cat, lvl, lang = cats[i], levels[i], langs[i]
            owner = owners[i]
            topics, subs = CATEGORIES[cat]
            t = rng.choice(topics)
            if cid == 1:
                cat, lvl, lang, t = ("programming", "beginner", "en",
                                     "Python")
            if cid in DEV_INSTRUCTOR_COURSES:
                owner = 2
            s1, s2, s3 = rng.sample(subs, 3)
            a = rng.choice(AUDIENCES)
            tpl = rng.choice(TITLES[lang][lvl])
            title = tpl.format(t=t, a=a)
            r = rng.random()
            if lang == "en" and r < 0.35:
                title += ": %s and %s" % (s1.capitalize(), s2)
            elif r < 0.5:
                title += " (%d Edition)" % (self.anchor.year -
                                            rng.randrange(0, 4))
            if cid == 1:
                title = "Introduction to Python Programming"
            summary = rng.choice(SUMMARIES).format(
                t=t, n=rng.randrange(8, 60), lvl=lvl, s1=s1, s2=s2,
                w=rng.randrange(2, 13))
            sents = rng.sample(SENTENCES, rng.randrange(3, 7))
            desc = " ".join(x.format(t=t, s1=s1, s2=s2, s3=s3, a=a.lower(),
                                     pre=PREREQS[lvl]) for x in sents)
            if lang != "en":
                desc += " Taught in %s." % LANGUAGE_NAMES[lang]
            created = self.days_ago(20, 1400)
            if cid in DEV_INSTRUCTOR_COURSES:
                published = cid != DEV_UNPUBLISHED_COURSE
            else:
                published = rng.random() < PUBLISHED_SHARE
            pub_at = None
            if published:
                pub_at = created + dt.timedelta(
                    seconds=rng.uniform(3600, 19 * 86400))
            updated = (pub_at or created) + dt.timedelta(
                seconds=rng.uniform(0, 86400))
            self.course_meta[cid] = (published, pub_at, owner)
            rows.append([str(cid), str(owner), esc(title), esc(summary),
                         esc(desc), cat, lvl, lang,
                         "t" if published else "f", ts(pub_at), ts(created),
                         ts(updated)])
        self.course_rows = rows
        self.published_ids = [c for c, m in self.course_meta.items() if m[0]]

    def videos_and_quizzes(self):
        rng = self.rng
        videos, jobs, quizzes, questions = [], [], [], []
        self.course_videos = {}      # course_id -> [(video_id, duration)]
        self.course_quizzes = {}     # course_id -> [(quiz_id, [qdefs])]
        vid = qid = quid = 0
        for cid, (published, pub_at, owner) in self.course_meta.items():
            created = pub_at or self.anchor - dt.timedelta(days=30)
            k = 4 if cid == 1 else rng.randint(*VIDEOS_PER_COURSE)
            vs = []
            for pos in range(k):
                vid += 1
                dur = rng.randrange(120, 1800)
                r = rng.random()
                status = ("ready" if r < 0.985 or cid == 1 else
                          "failed" if r < 0.992 else
                          "processing" if r < 0.996 else "queued")
                ready = status == "ready"
                q_at = created - dt.timedelta(hours=k - pos)
                st_at = q_at + dt.timedelta(seconds=rng.uniform(1, 600))
                fin_at = st_at + dt.timedelta(seconds=dur / 2.9)
                videos.append("\t".join([
                    str(vid), str(cid), esc(VIDEO_TITLES[pos]), str(pos + 1),
                    str(dur) if ready else "\\N", status,
                    RENDITIONS if ready else "[]",
                    "uploads/%d.mp4" % vid,
                    "%d/master.m3u8" % vid if ready else "\\N",
                    ts(q_at), ts(fin_at if ready else q_at)]))
                done = status in ("ready", "failed")
                jobs.append("\t".join([
                    str(vid), str(vid), "normal", status,
                    "100" if ready else "0",
                    "ffmpeg exited with status 1" if status == "failed"
                    else "\\N",
                    "1" if status != "queued" else "0", ts(q_at),
                    ts(st_at) if status != "queued" else "\\N",
                    ts(fin_at) if done else "\\N"]))
                if ready:
                    vs.append((vid, dur))
            self.course_videos[cid] = vs
            nq = 2 if cid == 1 else (1 if rng.random() < QUIZ_COURSE_SHARE
                                     else 0)
            qs = []
            for j in range(nq):
                qid += 1
                quizzes.append("\t".join([
                    str(qid), str(cid), "Quiz %d: check your understanding"
                    % (j + 1), "70", ts(created)]))
                types = (["single", "multiple", "truefalse", "numeric",
                          "short", "essay"] if cid == 1 else
                         rng.choices(["single", "multiple", "truefalse",
                                      "numeric", "short", "essay"],
                                     [30, 20, 20, 15, 12, 3],
                                     k=rng.randrange(3, 8)))
                qdefs = []
                for pos, typ in enumerate(types):
                    quid += 1
                    opts, ans = question_body(typ, rng)
                    questions.append("\t".join([
                        str(quid), str(qid), str(pos + 1), typ,
                        esc(question_prompt(typ, pos)),
                        opts, ans, "1"]))
                    qdefs.append((quid, typ))
                qs.append((qid, qdefs))
            self.course_quizzes[cid] = qs
        return [
            ("videos", ["video_id", "course_id", "title", "position",
                        "duration_seconds", "status", "renditions",
                        "source_path", "hls_path", "created_at",
                        "updated_at"], videos),
            ("transcode_jobs", ["job_id", "video_id", "priority", "status",
                                "progress_percent", "error", "attempts",
                                "queued_at", "started_at", "finished_at"],
             jobs),
            ("quizzes", ["quiz_id", "course_id", "title", "passing_score",
                         "created_at"], quizzes),
            ("questions", ["question_id", "quiz_id", "position", "type",
                           "prompt", "options", "answer", "points"],
             questions),
        ]

    def plan_enrollments(self):
        """Who enrolls where (before the courses are written: their
        enrollment_count comes from this)."""
        rng = self.rng
        # popularity: a shuffled Zipf-like weight per published course
        order = self.published_ids[:]
        rng.shuffle(order)
        cum, acc = [], 0.0
        for rank in range(len(order)):
            acc += 1.0 / (rank + 1) ** 0.7
            cum.append(acc)
        self.picks = {1: [2, 3]}
        counts = {2: 1, 3: 1}
        for uid in range(4, self.n_users + 1):
            k = min(int(rng.expovariate(1.0 / ENROLLMENTS_PER_USER)) + 1, 60)
            picked = list(dict.fromkeys(
                rng.choices(order, cum_weights=cum, k=k)))
            self.picks[uid] = picked
            for cid in picked:
                counts[cid] = counts.get(cid, 0) + 1
        for row in self.course_rows:
            row.append(str(counts.get(int(row[0]), 0)))
        return ("courses", ["course_id", "instructor_id", "title", "summary",
                            "description", "category", "level", "language",
                            "published", "published_at", "created_at",
                            "updated_at", "enrollment_count"],
                ["\t".join(r) for r in self.course_rows])

    def activity(self):
        """Enrollments, progress, submissions and the analytics summary."""
        rng = self.rng
        enroll, progress, subs = [], [], []
        stats = {}   # course_id -> [enrolled, active, completed, score, n, hist]
        sub_id = 0
        self.sub_times = []
        recent = self.anchor - dt.timedelta(days=30)
        for uid, picked in self.picks.items():
            for cid in picked:
                pub_at = self.course_meta[cid][1]
                lo = max(pub_at, self.anchor - dt.timedelta(days=730))
                span = (self.anchor - lo).total_seconds()
                e_at = lo + dt.timedelta(seconds=rng.uniform(0, span))
                st = stats.get(cid)
                if st is None:
                    st = stats[cid] = [0, 0, 0, 0.0, 0, [0] * 10]
                st[0] += 1
                vs = self.course_videos[cid]
                r = rng.random()
                completed = r < 0.12 and uid != 1
                watched = vs if completed else (
                    vs[:rng.randrange(0, len(vs) + 1)] if r < 0.55 else [])
                last = e_at
                for vid, dur in watched:
                    when = e_at + dt.timedelta(
                        seconds=rng.uniform(600, 60 * 86400))
                    when = min(when, self.anchor - dt.timedelta(minutes=5))
                    last = max(last, when)
                    if completed or rng.random() < 0.5:
                        rngs = "{[0,%d)}" % dur
                        pos, comp = dur, when
                    else:
                        a = rng.randrange(0, dur // 2)
                        b = rng.randrange(a + 1, dur)
                        rngs = "{[0,%d),[%d,%d)}" % (min(a, 30), a, b) \
                            if a > 30 else "{[0,%d)}" % b
                        pos, comp = b, None
                    progress.append("\t".join([
                        str(uid), str(vid), str(pos), rngs, ts(comp),
                        ts(when)]))
                if last >= recent:
                    st[1] += 1
                pct = 100 if completed else (
                    round(100 * len(watched) / len(vs)) if vs else 0)
                c_at = last if completed else None
                if completed:
                    st[2] += 1
                enroll.append("\t".join([
                    str(uid), str(cid), ts(e_at),
                    "completed" if completed else "active", str(pct),
                    ts(c_at)]))
                for quiz_id, qdefs in self.course_quizzes[cid]:
                    if not completed and rng.random() > 0.6:
                        continue
                    for attempt in range(rng.randint(1, 2)):
                        lo = max(e_at, self.anchor - dt.timedelta(days=365))
                        span = (self.anchor - lo).total_seconds()
                        s_at = lo + dt.timedelta(
                            seconds=rng.uniform(0, span))
                        sub_id += 1
                        answers, results, score = submission_body(qdefs, rng)
                        mx = len(qdefs)
                        passed = score * 100 >= 70 * mx
                        pctscore = 100.0 * score / mx
                        st[3] += pctscore
                        st[4] += 1
                        st[5][min(int(pctscore // 10), 9)] += 1
                        self.sub_times.append(s_at)
                        subs.append("\t".join([
                            str(sub_id), str(quiz_id), str(uid), answers,
                            "graded", str(score), str(mx),
                            "t" if passed else "f", results, ts(s_at),
                            ts(s_at + dt.timedelta(milliseconds=40))]))
        now = ts(self.anchor)
        summary = []
        for cid in self.course_meta:
            st = stats.get(cid) or [0, 0, 0, 0.0, 0, [0] * 10]
            summary.append("\t".join([
                str(cid), str(st[0]), str(st[1]), str(st[2]),
                "%.2f" % st[3], str(st[4]),
                "{%s}" % ",".join(map(str, st[5])), now]))
        return [
            ("enrollments", ["user_id", "course_id", "enrolled_at", "status",
                             "progress_percent", "completed_at"], enroll),
            ("video_progress", ["user_id", "video_id", "position_seconds",
                                "watched", "completed_at", "updated_at"],
             progress),
            ("quiz_submissions", ["submission_id", "quiz_id", "user_id",
                                  "answers", "status", "score", "max_score",
                                  "passed", "results", "submitted_at",
                                  "graded_at"], subs),
            ("course_analytics_summary",
             ["course_id", "enrollment_count", "active_learners",
              "completion_count", "total_quiz_score",
              "quiz_submission_count", "score_histogram", "updated_at"],
             summary),
        ]

    def live_sessions(self):
        rng = self.rng
        lines = []
        sample = [1] + rng.sample(self.published_ids,
                                  min(200, len(self.published_ids)))
        for i, cid in enumerate(sample):
            c = self.days_ago(1, 300)
            lines.append("\t".join([
                str(i + 1), str(cid), "Live Q&A %d" % (i + 1),
                str(rng.choice([50, 100, 250, 1000])), "closed", ts(c),
                ts(c + dt.timedelta(hours=1))]))
        return ("live_sessions", ["session_id", "course_id", "title",
                                  "capacity", "status", "created_at",
                                  "closed_at"], lines)


def question_prompt(typ, pos):
    return {
        "single": "Question %d: which option is correct?",
        "multiple": "Question %d: select every statement that is true.",
        "truefalse": "Question %d: true or false?",
        "numeric": "Question %d: compute the value (two decimals).",
        "short": "Question %d: name the keyword that defines a function.",
        "essay": "Question %d: explain the idea in your own words.",
    }[typ] % (pos + 1)


def question_body(typ, rng):
    """(options, answer) as COPY fields (jsonb text or \\N)."""
    abcd = '[{"id": "a", "text": "Option A"}, {"id": "b", "text": "Option B"}' \
           ', {"id": "c", "text": "Option C"}, {"id": "d", "text": "Option D"}]'
    if typ == "single":
        return abcd, '{"correct": "%s"}' % rng.choice("abcd")
    if typ == "multiple":
        ids = sorted(rng.sample("abcd", 2))
        return abcd, '{"correct": ["%s", "%s"]}' % tuple(ids)
    if typ == "truefalse":
        return "\\N", '{"correct": %s}' % rng.choice(["true", "false"])
    if typ == "numeric":
        return "\\N", ('{"value": %.2f, "tolerance": 0.01, '
                       '"toleranceType": "absolute"}' % rng.uniform(0, 100))
    if typ == "short":
        return "\\N", '{"accepted": ["def"], "caseSensitive": false}'
    return "\\N", "\\N"


def submission_body(qdefs, rng):
    """(answers jsonb, results jsonb, score) for a plausible attempt."""
    ans, res, score = [], [], 0
    skill = rng.random()
    for quid, typ in qdefs:
        ok = typ != "essay" and rng.random() < 0.35 + 0.6 * skill
        score += 1 if ok else 0
        v = {"single": '"b"', "multiple": '["a", "c"]', "truefalse": "true",
             "numeric": "42.0", "short": '"def"',
             "essay": '"It depends on the context."'}[typ]
        ans.append('"%d": %s' % (quid, v))
        res.append('{"questionId": %d, "correct": %s, "points": %d}'
                   % (quid, "true" if ok else "false", 1 if ok else 0))
    return "{%s}" % ", ".join(ans), "[%s]" % ", ".join(res), score


# --- loading -----------------------------------------------------------------

TABLES = ["users", "courses", "enrollments", "videos", "video_progress",
          "quizzes", "questions", "quiz_submissions",
          "submission_idempotency_keys", "course_analytics_summary",
          "transcode_jobs", "live_sessions", "processed_events"]


def produce(demo, q):
    """Generator thread: tables in load order, so COPY of one table runs
    while the next is being generated (psycopg2 releases the GIL while
    libpq waits on the server)."""
    try:
        q.put(demo.users())
        demo.courses()
        q.put(demo.plan_enrollments())
        for item in demo.videos_and_quizzes():
            q.put(item)
        for item in demo.activity():
            q.put(item)
        q.put(demo.live_sessions())
        q.put(None)
    except BaseException as e:   # re-raised by the consumer
        q.put(e)


def load(dsn, demo, log):
    q = queue.Queue(maxsize=4)
    producer = threading.Thread(target=produce, args=(demo, q), daemon=True)
    producer.start()

    conn = psycopg2.connect(dsn, application_name="elearn-demo-data")
    try:
        cur = conn.cursor()
        cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = "
                    "current_user")
        superuser = cur.fetchone()[0]
        cur.execute("SET LOCAL synchronous_commit = off")
        cur.execute("TRUNCATE %s RESTART IDENTITY CASCADE" % ", ".join(TABLES))
        if superuser:
            # Skip FK and trigger work: the generator keeps the data
            # consistent and computes enrollment_count itself.
            cur.execute("SET LOCAL session_replication_role = replica")
        else:
            cur.execute("ALTER TABLE enrollments DISABLE TRIGGER "
                        "enrollments_count_ins")
        cur.execute("SELECT count(*) FROM elearn_manage_quiz_partitions()")
        # Secondary indexes are rebuilt after the load: one sorted build is
        # far cheaper than row-by-row maintenance (the GIN search index
        # most of all).  Definitions are read from the catalog, so the
        # migrations stay the only place an index is defined; all of this is
        # one transaction, nobody ever sees a table without its indexes.
        cur.execute(
            "SELECT n.nspname, c.relname, pg_get_indexdef(i.indexrelid) "
            "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_class t ON t.oid = i.indrelid "
            "WHERE t.relname = ANY(%s) AND n.nspname = 'public' "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint k "
            "                WHERE k.conindid = i.indexrelid) "
            "AND NOT EXISTS (SELECT 1 FROM pg_inherits h "
            "                WHERE h.inhrelid = i.indexrelid)",
            (TABLES,))
        indexes = cur.fetchall()
        for nsp, name, _ in indexes:
            cur.execute('DROP INDEX "%s"."%s"' % (nsp, name))
        cp = Copier(cur, freeze=True)
        while True:
            item = q.get()
            if isinstance(item, BaseException):
                raise item
            if item is None:
                break
            table, cols, lines = item
            if table == "quiz_submissions":
                # the quarters the submissions fall in must exist first
                for y, qu in sorted({(t.year, (t.month - 1) // 3)
                                     for t in demo.sub_times}):
                    cur.execute("SELECT elearn_create_quiz_partition(%s)",
                                (dt.datetime(y, 3 * qu + 1, 1,
                                             tzinfo=dt.timezone.utc),))
            t1 = time.monotonic()
            cp.copy(table, cols, lines,
                    partitioned=(table == "quiz_submissions"))
            log("  %-26s %8d rows %5.1f s" % (table, len(lines),
                                              time.monotonic() - t1))
        t1 = time.monotonic()
        for _, _, ddl in indexes:
            # a partitioned index prints as ON ONLY (parent only, invalid
            # until attached); rebuilt on the whole tree instead
            cur.execute(ddl.replace(" ON ONLY ", " ON ", 1))
        log("  %d indexes rebuilt in %.1f s" % (len(indexes),
                                                time.monotonic() - t1))
        if not superuser:
            cur.execute("ALTER TABLE enrollments ENABLE TRIGGER "
                        "enrollments_count_ins")
        # new rows must get fresh ids
        for table in TABLES:
            cur.execute(
                "SELECT a.attname, pg_get_serial_sequence(%s, a.attname) "
                "FROM pg_attribute a WHERE a.attrelid = %s::regclass "
                "AND a.attnum > 0 AND NOT a.attisdropped "
                "AND pg_get_serial_sequence(%s, a.attname) IS NOT NULL",
                (table, table, table))
            for col, seq in cur.fetchall():
                cur.execute("SELECT setval(%%s, coalesce(max(%s), 0) + 1, "
                            "false) FROM %s" % (col, table), (seq,))
        # the triggers that keep search_postings were off (or fired row by
        # row on an emptied table): build it whole, in this transaction
        t1 = time.monotonic()
        cur.execute("SELECT elearn_search_postings_rebuild()")
        log("search postings: %d rows in %.1f s"
            % (cur.fetchone()[0], time.monotonic() - t1))
        conn.commit()
        t1 = time.monotonic()
        conn.autocommit = True
        # VACUUM sets the visibility map where COPY FREEZE could not (the
        # partitions), so index-only scans work at once; ANALYZE for plans.
        cur.execute("VACUUM (ANALYZE) quiz_submissions")
        cur.execute("VACUUM (ANALYZE) search_postings")
        cur.execute("ANALYZE")
        log("analyzed in %.1f s" % (time.monotonic() - t1))
        return cp.counts
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--small", dest="profile", action="store_const",
                   const="small", help="1,000 users, 2,000 courses (default)")
    g.add_argument("--full", dest="profile", action="store_const",
                   const="full", help="50,000 users, 100,000 courses")
    ap.add_argument("--seed", type=int, default=20240101)
    ap.add_argument("--anchor", help="YYYY-MM-DD the data is relative to "
                    "(default: first day of the current UTC month)")
    ap.add_argument("--dsn", help="libpq conninfo (default: PG* variables, "
                    "else config/elearn.env)")
    ap.add_argument("--user-password",
                    help="password of every userN@example.com account")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    profile = args.profile or "small"
    if args.anchor:
        anchor = dt.datetime.strptime(args.anchor, "%Y-%m-%d").replace(
            tzinfo=dt.timezone.utc)
    else:
        now = dt.datetime.now(dt.timezone.utc)
        anchor = dt.datetime(now.year, now.month, 1, tzinfo=dt.timezone.utc)

    def log(msg):
        if not args.quiet:
            print("demo-data: " + msg, file=sys.stderr, flush=True)

    t0 = time.monotonic()
    dsn = args.dsn if args.dsn is not None else default_dsn()
    counts = load(dsn, Demo(profile, args.seed, anchor, args.user_password),
                  log)
    log("%s data loaded in %.1f s (%s)" % (
        profile, time.monotonic() - t0,
        ", ".join("%s %d" % kv for kv in counts.items())))


if __name__ == "__main__":
    main()
