#!/bin/sh
exec helpkit platform train --data {{ paths.train }} --model-dir {{ paths.model }} --config {{ paths.config }}
